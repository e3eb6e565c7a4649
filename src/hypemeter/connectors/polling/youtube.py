"""YouTube video statistics and channel subscriber counts (YouTube Data API v3).

Facts relied on (developers.google.com/youtube/v3: "Videos: list", "Channels:
list", the video and channel resources, "Quota costs"; PLATFORMS.md):

- ``GET /youtube/v3/videos?part=statistics&id=<comma ids>`` and
  ``GET /youtube/v3/channels?part=statistics&id=<comma ids>``; public statistics
  need only an API key, which Google APIs take in the ``key`` parameter or the
  ``X-Goog-Api-Key`` header: the header keeps it out of every URL. ``maxResults``
  is not supported with ``id``; 50 ids per call is the API's page maximum (the
  reference does not state a cap for ``id`` itself: unverified, kept at 50).
- Statistics are strings of digits (uint64 as JSON strings): viewCount -> views,
  likeCount -> likes, commentCount -> comments. ``likeCount`` is absent when the
  owner hides likes and ``commentCount`` when comments are off: no reading then.
- Channels: subscriberCount -> followers (YouTube rounds it to three significant
  figures), none when ``hiddenSubscriberCount`` is true.
- A requested id absent from ``items`` (deleted, private, terminated) is a problem.
- Quota: ``list`` costs 1 unit per call; 10,000 units per day per project, reset at
  midnight Pacific Time.
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
    PollError,
    Target,
    batches,
    decode,
    require_secret,
)

VIDEOS = "/youtube/v3/videos"
CHANNELS = "/youtube/v3/channels"
IDS_PER_CALL = 50
KEY_HEADER = "X-Goog-Api-Key"
Count = str | int | None


LIMITS = Limits(
    capacity=10, refill_per_s=1.0, window_s=86_400, window_calls=10_000, daily_units=10_000
)


class _Statistics(msgspec.Struct, rename="camel"):
    view_count: Count = None
    like_count: Count = None
    comment_count: Count = None
    subscriber_count: Count = None
    hidden_subscriber_count: bool = False


class _Item(msgspec.Struct):
    id: str
    statistics: _Statistics | None = None


class _List(msgspec.Struct):
    items: list[_Item] = []


@dataclass(frozen=True, slots=True)
class YouTubePoller:
    platform: str = "youtube"
    batch: int = IDS_PER_CALL
    limits: Limits = LIMITS

    def calls(self, targets: Sequence[Target], credential: Mapping[str, str]) -> list[Call]:
        """One videos call per 50 videos, then one channels call per 50 distinct channels."""
        key = require_secret(credential, "api_key", self.platform)
        headers = {KEY_HEADER: key}
        videos = [
            Call("GET", VIDEOS, _params(ids), headers=headers, content_ids=ids)
            for ids in batches((t.content_id for t in targets), IDS_PER_CALL)
        ]
        channels = [
            Call("GET", CHANNELS, _params(ids), headers=headers, account_ids=ids)
            for ids in batches((t.account_id for t in targets), IDS_PER_CALL)
        ]
        return videos + channels

    def read(self, call: Call, status: int, body: bytes) -> Answer:
        if call.path not in (VIDEOS, CHANNELS):
            raise PollError(f"youtube: no reader for {call.path}")
        items = decode(body, _List, self.platform).items
        built = AnswerBuilder()
        if call.path == VIDEOS:
            _videos(built, call.content_ids, items)
        else:
            _channels(built, call.account_ids, items)
        return built.answer()


def _params(ids: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return (("part", "statistics"), ("id", ",".join(ids)))


def _videos(built: AnswerBuilder, wanted: Sequence[str], items: list[_Item]) -> None:
    seen = [item for item in items if item.id in wanted]
    for item in seen:
        stats = item.statistics or _Statistics()
        built.add(item.id, None, "views", stats.view_count)
        built.add(item.id, None, "likes", stats.like_count)
        built.add(item.id, None, "comments", stats.comment_count)
    built.missing(wanted, (item.id for item in seen), "video")


def _channels(built: AnswerBuilder, wanted: Sequence[str], items: list[_Item]) -> None:
    seen = [item for item in items if item.id in wanted]
    for item in seen:
        stats = item.statistics or _Statistics()
        if not stats.hidden_subscriber_count:
            built.add(None, item.id, "followers", stats.subscriber_count)
    built.missing(wanted, (item.id for item in seen), "channel", "deleted or terminated?")
