"""X (Twitter) post counters over the v2 Posts lookup.

Facts relied on (docs.x.com: "Posts lookup" / GET /2/tweets, "Rate limits",
"Response codes and errors"; PLATFORMS.md):

- ``GET /2/tweets?ids=<comma ids>&tweet.fields=public_metrics`` on ``api.x.com``
  with ``Authorization: Bearer <token>``: up to 100 ids per request.
- ``public_metrics``: retweet_count, reply_count, like_count, quote_count,
  bookmark_count, impression_count. Mapped: like_count -> likes, reply_count ->
  comments, bookmark_count -> saves, impression_count -> impressions, and
  ``shares`` = retweet_count + quote_count (both are re-posts to other audiences;
  read only when both are present, so a missing half never looks like a drop).
- Partial errors come in a 200 body beside ``data``: ``errors: [{"value" or
  "resource_id": <id>, "title": "Not Found Error", "detail": "Could not find tweet
  with ids: [..]", ...}]`` (also "Authorization Error" for protected posts); each
  is a problem naming the id.
- Limits: 15-minute windows, reported in ``x-rate-limit-limit/-remaining/-reset``.
  The current table lists GET /2/tweets at 3,500 per app and 5,000 per user per 15
  minutes; older tiers were far lower (Basic: 15, legacy app-only: 300). 300 per 15
  minutes is the default here (a connector can raise it); the headers correct it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from hypemeter.connectors.polling.model import (
    Answer,
    AnswerBuilder,
    Call,
    Limits,
    Problem,
    Target,
    batches,
    decode,
    require_secret,
)

PATH = "/2/tweets"
IDS_PER_CALL = 100
COUNTERS = (
    ("like_count", "likes"),
    ("reply_count", "comments"),
    ("bookmark_count", "saves"),
    ("impression_count", "impressions"),
)
Count = int | None


LIMITS = Limits(capacity=15, refill_per_s=0.3, window_s=900, window_calls=300)


class _Metrics(msgspec.Struct):
    retweet_count: Count = None
    reply_count: Count = None
    like_count: Count = None
    quote_count: Count = None
    bookmark_count: Count = None
    impression_count: Count = None


class _Post(msgspec.Struct):
    id: str
    public_metrics: _Metrics | None = None


class _Error(msgspec.Struct):
    value: str | int | None = None
    resource_id: str | None = None
    title: str = "error"
    detail: str = ""


class _Lookup(msgspec.Struct):
    data: list[_Post] = []
    errors: list[_Error] = []


@dataclass(frozen=True, slots=True)
class XPoller:
    platform: str = "x"
    batch: int = IDS_PER_CALL
    limits: Limits = LIMITS

    def calls(self, targets: Sequence[Target], credential: Mapping[str, str]) -> list[Call]:
        token = require_secret(credential, "bearer_token", self.platform)
        return [
            Call(
                "GET",
                PATH,
                params=(("ids", ",".join(ids)), ("tweet.fields", "public_metrics")),
                headers={"Authorization": f"Bearer {token}"},
                content_ids=ids,
            )
            for ids in batches((t.content_id for t in targets), IDS_PER_CALL)
        ]

    def read(self, call: Call, status: int, body: bytes) -> Answer:
        lookup = decode(body, _Lookup, self.platform)
        built = AnswerBuilder()
        seen = [post.id for post in lookup.data if post.id in call.content_ids]
        for post in lookup.data:
            if post.id in call.content_ids:
                _add(built, post.id, post.public_metrics or _Metrics())
        for error in lookup.errors:
            post_id = error.resource_id or (None if error.value is None else str(error.value))
            seen += [post_id] if post_id else []
            upstream = f"{error.title}: {error.detail}".strip(": ")
            built.problems.append(Problem(f"post {post_id or '?'}: X reported an error", upstream))
        built.missing(call.content_ids, seen, "post", "deleted or protected?")
        return built.answer()


def _add(built: AnswerBuilder, post_id: str, metrics: _Metrics) -> None:
    for field, metric in COUNTERS:
        built.add(post_id, None, metric, getattr(metrics, field))
    if metrics.retweet_count is not None and metrics.quote_count is not None:
        built.add(post_id, None, "shares", metrics.retweet_count + metrics.quote_count)
