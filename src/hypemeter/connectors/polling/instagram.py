"""Instagram media insights over the Instagram Graph API, one media per call.

Facts relied on (developers.facebook.com: Instagram Platform reference "Instagram
Media Insights" and the Graph API "Rate Limits" page; PLATFORMS.md):

- ``GET /<INSTAGRAM_MEDIA_ID>/insights?metric=<comma list>`` on
  ``graph.facebook.com/<version>`` (Facebook Login) or ``graph.instagram.com``
  (Instagram Login): the base URL carries the version. Insights have no batch of
  ids, so each call reads one media. The Graph API takes the user access token as
  ``Authorization: Bearer <token>`` as well as in the ``access_token`` parameter
  its examples use; the header keeps it out of every URL.
- Metrics asked: views, reach, likes, comments, shares, saved, total_interactions.
  ``impressions``, ``plays`` and ``video_views`` are deprecated (April 2025) and
  error for newer media, so they are not asked.
- The answer is ``{"data": [{"name", "period", "values": [{"value": n}], ...}]}``.
  "If insights data you are requesting does not exist or is currently unavailable,
  the API returns an empty data set instead of 0": an absent metric or empty
  ``values`` yields no reading, never 0. Data may lag up to 48 hours.
- ``saved`` becomes ``saves``; ``total_interactions`` is skipped (Hypemeter derives
  totals from the parts). An ``{"error": {"message", "code"}}`` body is a problem
  (the message is the platform's own words, kept apart).
- Limits: 200 calls per user per rolling hour (Platform Rate Limits; Meta files
  Instagram Platform calls under Business Use Case limits, whose header
  ``rate_signal`` honours too). The bucket refills 180/h so that burst + refill
  stays within 200 in any hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from hypemeter.connectors.polling.model import (
    Answer,
    AnswerBuilder,
    Call,
    Limits,
    PollError,
    Problem,
    Target,
    batches,
    decode,
    require_secret,
)

ASKED = "views,reach,likes,comments,shares,saved,total_interactions"
METRIC_OF = {
    "views": "views",
    "reach": "reach",
    "likes": "likes",
    "comments": "comments",
    "shares": "shares",
    "saved": "saves",
}


LIMITS = Limits(capacity=20, refill_per_s=180 / 3600, window_s=3600, window_calls=200)


class _Value(msgspec.Struct):
    value: Any = None


class _Metric(msgspec.Struct):
    name: str
    values: list[_Value] = []
    total_value: _Value | None = None


class _Error(msgspec.Struct):
    message: str = ""
    code: int | str | None = None


class _Insights(msgspec.Struct):
    data: list[_Metric] = []
    error: _Error | None = None


@dataclass(frozen=True, slots=True)
class InstagramPoller:
    platform: str = "instagram"
    batch: int = 1
    limits: Limits = LIMITS

    def calls(self, targets: Sequence[Target], credential: Mapping[str, str]) -> list[Call]:
        token = require_secret(credential, "access_token", self.platform)
        return [
            Call(
                "GET",
                f"/{quote(media_id, safe='')}/insights",
                params=(("metric", ASKED),),
                headers={"Authorization": f"Bearer {token}"},
                content_ids=(media_id,),
            )
            for (media_id,) in batches((t.content_id for t in targets), 1)
        ]

    def read(self, call: Call, status: int, body: bytes) -> Answer:
        if len(call.content_ids) != 1:
            raise PollError("instagram: an insights call reads exactly one media")
        media_id = call.content_ids[0]
        insights = decode(body, _Insights, self.platform)
        if insights.error is not None:
            error = insights.error
            summary = f"media {media_id}: Instagram error {error.code}"
            return Answer(problems=(Problem(summary, error.message or None),))
        built = AnswerBuilder()
        for metric in insights.data:
            name = METRIC_OF.get(metric.name)
            if name is None:
                continue
            latest = metric.values[-1] if metric.values else metric.total_value
            built.add(media_id, None, name, None if latest is None else latest.value)
        return built.answer()
