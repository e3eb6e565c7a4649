"""The names an event may use: platforms and metrics with their aliases, each
tenant's metric catalog, and the bounds of an event's value per metric.

Pure: no I/O. ``hypemeter.events.model`` re-exports all of it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

# Names remembered per catalog (spellings senders repeat): bounded.
NAME_CACHE_LIMIT = 4096
MAX_CUSTOM_METRICS = 200

PLATFORMS: tuple[str, ...] = (
    "instagram",
    "youtube",
    "tiktok",
    "x",
    "facebook",
    "linkedin",
    "twitch",
    "app",
    "web",
)

PLATFORM_ALIASES: Mapping[str, str] = {
    "twitter": "x",
    "ig": "instagram",
    "insta": "instagram",
    "yt": "youtube",
    "fb": "facebook",
    "meta": "facebook",
    "tt": "tiktok",
    "li": "linkedin",
    "ios": "app",
    "android": "app",
    "website": "web",
}


class MetricKind(enum.StrEnum):
    """Counters are summed over time; gauges are read as the value at a time."""

    COUNTER = "counter"
    GAUGE = "gauge"


BUILTIN_METRICS: Mapping[str, MetricKind] = {
    "likes": MetricKind.COUNTER,
    "comments": MetricKind.COUNTER,
    "shares": MetricKind.COUNTER,
    "saves": MetricKind.COUNTER,
    "views": MetricKind.COUNTER,
    "impressions": MetricKind.COUNTER,
    "reach": MetricKind.COUNTER,
    "clicks": MetricKind.COUNTER,
    "conversions": MetricKind.COUNTER,
    "revenue": MetricKind.COUNTER,
    "followers": MetricKind.GAUGE,
    "votes": MetricKind.COUNTER,
}

METRIC_ALIASES: Mapping[str, str] = {
    "like": "likes",
    "heart": "likes",
    "hearts": "likes",
    "favorite": "likes",
    "favorites": "likes",
    "comment": "comments",
    "reply": "comments",
    "replies": "comments",
    "share": "shares",
    "repost": "shares",
    "reposts": "shares",
    "retweet": "shares",
    "retweets": "shares",
    "save": "saves",
    "saved": "saves",
    "bookmark": "saves",
    "bookmarks": "saves",
    "view": "views",
    "video_view": "views",
    "video_views": "views",
    "play": "views",
    "plays": "views",
    "impression": "impressions",
    "click": "clicks",
    "link_click": "clicks",
    "link_clicks": "clicks",
    "conversion": "conversions",
    "purchase": "conversions",
    "purchases": "conversions",
    "follower": "followers",
    "subscribers": "followers",
    "subscriber": "followers",
    "vote": "votes",
}


@dataclass(frozen=True, slots=True)
class ValueLimit:
    """The largest value one event of a metric may carry: as an increment (``kind:
    delta``, its absolute value) and as a cumulative reading (``kind: snapshot``)."""

    max_delta: float
    max_snapshot: float

    def of(self, kind: str) -> float:
        return self.max_snapshot if kind == "snapshot" else self.max_delta


# Sane bounds per event, which a tenant may change (PUT /v1/admin/value-limits):
# engagement arrives one at a time or in small batches, while readings are cumulative
# counts, which for the largest accounts and videos run into billions.
_ENGAGEMENT = ValueLimit(1e6, 1e10)
_AUDIENCE = ValueLimit(1e9, 1e12)
DEFAULT_VALUE_LIMITS: Mapping[str, ValueLimit] = {
    "likes": _ENGAGEMENT,
    "comments": _ENGAGEMENT,
    "shares": _ENGAGEMENT,
    "saves": _ENGAGEMENT,
    "clicks": _ENGAGEMENT,
    "votes": _ENGAGEMENT,
    "conversions": _ENGAGEMENT,
    "views": _AUDIENCE,
    "impressions": _AUDIENCE,
    "reach": _AUDIENCE,
    "revenue": ValueLimit(1e8, 1e12),
    "followers": ValueLimit(1e10, 1e10),
}
CUSTOM_VALUE_LIMIT = _AUDIENCE
# No bound may be set above this: past 2**53 floats no longer hold every integer.
MAX_VALUE_LIMIT = 1e15


def default_value_limit(metric: str) -> ValueLimit:
    return DEFAULT_VALUE_LIMITS.get(metric, CUSTOM_VALUE_LIMIT)


def canonical_name(raw: str) -> str:
    """Lower-case a name and unify separators: ``Video-View`` -> ``video_view``."""
    return raw.strip().lower().replace("-", "_").replace(" ", "_")


def normalize_platform(raw: str) -> str | None:
    name = canonical_name(raw)
    name = PLATFORM_ALIASES.get(name, name)
    return name if name in PLATFORMS else None


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    name: str
    kind: MetricKind


@dataclass(slots=True)
class MetricCatalog:
    """The metrics one tenant may send: the built-in ones plus its custom ones."""

    custom: dict[str, MetricKind] = field(default_factory=dict)
    _known: dict[str, str] = field(default_factory=dict)

    def normalize(self, raw: str) -> str | None:
        known = self._known.get(raw)
        if known is not None:
            return known
        name = canonical_name(raw)
        name = METRIC_ALIASES.get(name, name)
        if name in BUILTIN_METRICS or name in self.custom:
            if len(self._known) < NAME_CACHE_LIMIT:
                self._known[raw] = name
            return name
        return None

    def kind_of(self, name: str) -> MetricKind | None:
        return BUILTIN_METRICS.get(name) or self.custom.get(name)

    def allowed(self) -> list[str]:
        return sorted([*BUILTIN_METRICS, *self.custom])


def check_custom_metric_name(name: str) -> str:
    """Return the canonical name of a new custom metric or raise ValueError saying why."""
    canon = canonical_name(name)
    if not canon or len(canon) > 64 or not canon.replace("_", "").isalnum():
        raise ValueError("name must be 1-64 letters, digits, '_' or '-'")
    if canon in BUILTIN_METRICS or canon in METRIC_ALIASES:
        raise ValueError(f"{canon!r} is a built-in metric or alias")
    return canon
