"""TikTok video counters over the Display API's Query Videos (API v2).

Facts relied on (developers.tiktok.com: "Query Videos" /doc/tiktok-api-v2-video-query
and "Rate Limits" /doc/tiktok-api-v2-rate-limit; PLATFORMS.md):

- ``POST /v2/video/query/?fields=<comma fields>`` on ``open.tiktokapis.com`` with
  ``Authorization: Bearer <user access token>`` (scope ``video.list``),
  ``Content-Type: application/json`` and the body
  ``{"filters": {"video_ids": [...]}}``: up to 20 ids per request.
- It only returns videos that belong to the token's user; others, deleted or
  private ones are simply absent, which is a problem naming them.
- The answer is ``{"data": {"videos": [...]}, "error": {"code", "message",
  "log_id"}}``; ``code`` "ok" means success, anything else is a problem.
- Counters: view_count -> views, like_count -> likes, comment_count -> comments,
  share_count -> shares (integers).
- Limits: 600 requests per endpoint per one-minute sliding window (per token);
  over it, 429 ``rate_limit_exceeded``. The bucket (30 burst + 9/s) stays within
  600 in any minute.
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

PATH = "/v2/video/query/"
FIELDS = "id,like_count,comment_count,share_count,view_count"
IDS_PER_CALL = 20
COUNTERS = (
    ("view_count", "views"),
    ("like_count", "likes"),
    ("comment_count", "comments"),
    ("share_count", "shares"),
)
Count = int | float | None


LIMITS = Limits(capacity=30, refill_per_s=9.0, window_s=60, window_calls=600)


class _Video(msgspec.Struct):
    id: str | int
    view_count: Count = None
    like_count: Count = None
    comment_count: Count = None
    share_count: Count = None


class _Data(msgspec.Struct):
    videos: list[_Video] = []


class _Error(msgspec.Struct):
    code: str = "ok"
    message: str = ""
    log_id: str = ""


class _Query(msgspec.Struct):
    data: _Data | None = None
    error: _Error | None = None


@dataclass(frozen=True, slots=True)
class TikTokPoller:
    platform: str = "tiktok"
    batch: int = IDS_PER_CALL
    limits: Limits = LIMITS

    def calls(self, targets: Sequence[Target], credential: Mapping[str, str]) -> list[Call]:
        token = require_secret(credential, "access_token", self.platform)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return [
            Call(
                "POST",
                PATH,
                params=(("fields", FIELDS),),
                json={"filters": {"video_ids": list(ids)}},
                headers=headers,
                content_ids=ids,
            )
            for ids in batches((t.content_id for t in targets), IDS_PER_CALL)
        ]

    def read(self, call: Call, status: int, body: bytes) -> Answer:
        query = decode(body, _Query, self.platform)
        error = query.error or _Error()
        if error.code != "ok":
            summary = f"TikTok error {error.code} (log_id {error.log_id})"
            return Answer(problems=(Problem(summary, error.message or None),))
        built = AnswerBuilder()
        seen: list[str] = []
        for video in (query.data or _Data()).videos:
            video_id = str(video.id)
            if video_id not in call.content_ids:
                continue
            seen.append(video_id)
            for field, metric in COUNTERS:
                built.add(video_id, None, metric, getattr(video, field))
        built.missing(call.content_ids, seen, "video", "deleted, private or not the token owner's?")
        return built.answer()
