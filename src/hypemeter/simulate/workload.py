"""A seeded generator of realistic engagement traffic, shared by the simulator and the benchmarks.

Influencer popularity is Zipf-skewed (exponent ~1.1); each influencer posts on
a few platforms; engagement concentrates on the newest posts and decays with
age; comments carry text and tags; follower counts arrive as snapshots; a few
events are retried (same event_id), arrive late, or (for benchmarks) are invalid.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PLATFORM_CHOICES = ("instagram", "tiktok", "youtube", "x", "facebook", "linkedin", "twitch")
METRIC_MIX = (
    ("views", 0.46),
    ("likes", 0.24),
    ("impressions", 0.08),
    ("clicks", 0.07),
    ("comments", 0.05),
    ("shares", 0.04),
    ("saves", 0.03),
    ("conversions", 0.01),
    ("followers", 0.02),
)
COMMENTS = (
    "love this!",
    "where did you get that jacket?",
    "so good, watched it three times",
    "not my favourite tbh",
    "this is amazing",
    "link please",
    "meh",
    "can't wait for the next one",
    "the colours in this are unreal",
    "first!",
)
TAGS = ("giveaway", "question", "praise", "complaint", "spam", "product")
US = 1_000_000


def iso(us: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Influencer:
    influencer_id: str
    platforms: tuple[str, ...]
    followers: dict[str, float]
    growth_per_day: float
    post_times: list[int] = field(default_factory=list)
    post_ids: list[str] = field(default_factory=list)


class Workload:
    """Deterministic for a given seed: the same calls return the same events."""

    def __init__(
        self,
        *,
        seed: int,
        influencers: int = 1000,
        content_items: int = 20_000,
        start_us: int,
        span_us: int = 7 * 24 * 3600 * US,
        duplicate_rate: float = 0.01,
        late_rate: float = 0.02,
        invalid_rate: float = 0.0,
        campaigns: int = 20,
        id_prefix: str | None = None,
        origin_us: int | None = None,
    ) -> None:
        """``origin_us`` is when follower counts start to grow (default ``start_us``): two
        workloads of one seed and origin agree on every account's followers."""
        self._rng = np.random.default_rng(seed)
        self._prefix = id_prefix if id_prefix is not None else f"sim{seed}"
        self._counter = 0
        self._duplicate_rate = duplicate_rate
        self._late_rate = late_rate
        self._invalid_rate = invalid_rate
        self._recent: deque[dict[str, Any]] = deque(maxlen=5000)
        self._campaigns = [f"campaign-{i}" for i in range(campaigns)]
        ranks = np.arange(1, influencers + 1, dtype=np.float64)
        weights = 1.0 / ranks**1.1
        self._popularity = weights / weights.sum()
        self._metrics = [m for m, _ in METRIC_MIX]
        mix = np.array([p for _, p in METRIC_MIX])
        self._metric_p = mix / mix.sum()
        self._influencers = [self._make_influencer(i, float(w)) for i, w in enumerate(weights)]
        self._origin_us = start_us if origin_us is None else origin_us
        self._spread_posts(content_items, start_us, span_us)

    def _make_influencer(self, index: int, weight: float) -> _Influencer:
        count = int(self._rng.integers(1, 4))
        platforms = tuple(
            str(p) for p in self._rng.choice(PLATFORM_CHOICES, size=count, replace=False)
        )
        base = 2_000 + 2_000_000 * weight
        followers = {p: base * float(self._rng.uniform(0.3, 1.5)) for p in platforms}
        growth = float(self._rng.normal(0.004, 0.003))
        return _Influencer(f"inf-{index:04d}", platforms, followers, growth)

    def _spread_posts(self, content_items: int, start_us: int, span_us: int) -> None:
        owners = self._rng.choice(len(self._influencers), size=content_items, p=self._popularity)
        times = self._rng.integers(start_us - span_us // 7, start_us + span_us, size=content_items)
        posts = sorted(zip(owners.tolist(), times.tolist(), strict=True), key=lambda p: p[1])
        for n, (owner, at) in enumerate(posts):
            inf = self._influencers[owner]
            inf.post_times.append(at)
            inf.post_ids.append(f"post-{n:06d}")

    @property
    def influencer_ids(self) -> list[str]:
        return [i.influencer_id for i in self._influencers]

    def events(self, count: int, *, start_us: int, end_us: int) -> list[dict[str, Any]]:
        """``count`` events with timestamps spread evenly over [start_us, end_us)."""
        rng = self._rng
        who = rng.choice(len(self._influencers), size=count, p=self._popularity).tolist()
        what = rng.choice(len(self._metrics), size=count, p=self._metric_p).tolist()
        chance = rng.random((count, 4)).tolist()
        backs = rng.geometric(0.35, size=count).tolist()
        users = rng.zipf(1.3, size=count).tolist()
        step = max(1, (end_us - start_us) // max(count, 1))
        out: list[dict[str, Any]] = []
        for n in range(count):
            roll = chance[n]
            if roll[0] < self._duplicate_rate and self._recent:
                out.append(self._recent[int(roll[1] * len(self._recent))])
                continue
            ts = start_us + n * step
            if roll[2] < self._late_rate:
                ts -= int(roll[3] * 3600 * US)
            inf = self._influencers[who[n]]
            event = self._event(inf, self._metrics[what[n]], ts, backs[n], users[n], roll[3])
            if roll[1] < self._invalid_rate:
                self._spoil(event, roll[3])
            else:
                self._recent.append(event)
            out.append(event)
        return out

    def _event(
        self, inf: _Influencer, metric: str, ts: int, back: int, user: int, roll: float
    ) -> dict[str, Any]:
        self._counter += 1
        platform = inf.platforms[int(roll * len(inf.platforms))]
        event: dict[str, Any] = {
            "event_id": f"{self._prefix}-{self._counter}",
            "influencer_id": inf.influencer_id,
            "platform": platform,
            "metric": metric,
            "ts": iso(ts),
        }
        if metric == "followers":
            days = (ts - self._origin_us) / (86400 * US)
            event["kind"] = "snapshot"
            event["value"] = max(
                0, round(inf.followers[platform] * (1 + inf.growth_per_day) ** days)
            )
            return event
        latest = bisect.bisect_right(inf.post_times, ts) - 1
        if latest >= 0:
            event["content_id"] = inf.post_ids[max(0, latest - back + 1)]
        if int(roll * 1000) % 3 == 0:
            event["campaign_id"] = self._campaigns[int(roll * len(self._campaigns))]
        event["user_id"] = f"user-{user % 200_000}"
        if metric == "comments":
            event["text"] = COMMENTS[int(roll * len(COMMENTS))]
            event["tags"] = [TAGS[int(roll * 97) % len(TAGS)]]
        if metric == "impressions":
            # Platforms report impressions as counts: one event stands for many views.
            event["value"] = 10 + int(roll * 190)
        if metric == "conversions":
            event["variant"] = "A" if roll < 0.5 else "B"
            event["properties"] = {"order_value": round(20 + roll * 180, 2)}
        return event

    @staticmethod
    def _spoil(event: dict[str, Any], roll: float) -> None:
        choice = int(roll * 3)
        if choice == 0:
            del event["ts"]
        elif choice == 1:
            event["metric"] = "telepathy"
        else:
            event["platform"] = "myspace"
