"""The one event schema every source is normalised to, and its validation rules.

Pure: no I/O. Decoding uses msgspec Structs because this is the hot path
(PERF.md); pydantic stays at the HTTP edge for everything else.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

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

KINDS: tuple[str, ...] = ("delta", "snapshot")

# The event ids platform connectors give the events they map (``ig:comment:<id>``,
# ``poll:youtube:<video>:views:<time>``...). Only connectors may write ids in this
# namespace: an API key that could would claim a delivery before it arrives, and the
# real one would then be dropped as a duplicate.
CONNECTOR_ID_PREFIXES: tuple[str, ...] = ("ig:", "fb:", "x:", "li:", "tw:", "tt:", "yt:", "poll:")


def is_connector_event_id(event_id: str | None) -> bool:
    """Whether an event id lies in the namespace reserved for platform connectors."""
    return event_id is not None and event_id.startswith(CONNECTOR_ID_PREFIXES)


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


MAX_ID_LENGTH = 256
MAX_TAGS = 64
MAX_CUSTOM_METRICS = 200

# Length rules are checked by msgspec in C while decoding: this is the hot path.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Tags = Annotated[list[str], msgspec.Meta(max_length=MAX_TAGS)]


def canonical_name(raw: str) -> str:
    """Lower-case a name and unify separators: ``Video-View`` -> ``video_view``."""
    return raw.strip().lower().replace("-", "_").replace(" ", "_")


def normalize_platform(raw: str) -> str | None:
    name = canonical_name(raw)
    name = PLATFORM_ALIASES.get(name, name)
    return name if name in PLATFORMS else None


_NAME_CACHE_LIMIT = 4096
# Senders repeat the same few spellings: remember them instead of re-normalising.
_cached_platform = functools.lru_cache(maxsize=_NAME_CACHE_LIMIT)(normalize_platform)


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
            if len(self._known) < _NAME_CACHE_LIMIT:
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


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One event as it arrives on the wire (POST /v1/events).

    ``account_id`` (the platform's account id) is not stored: with ``content_id``,
    it lets the tenant's registry name the influencer (see ``Directory``).
    """

    # Required fields default to None so that a missing one is reported by
    # validate_event without forcing the batch off the one-call decode path.
    influencer_id: Id | None = None
    platform: str | None = None
    metric: str | None = None
    ts: dt.datetime | None = None
    event_id: Id | None = None
    content_id: Id | None = None
    campaign_id: Id | None = None
    account_id: Id | None = None
    value: float = 1.0
    kind: str = "delta"
    user_id: Id | None = None
    text: str | None = None
    tags: Tags | None = None
    variant: Id | None = None
    properties: dict[str, Any] | None = None


class TrackIn(msgspec.Struct, forbid_unknown_fields=True):
    """One in-app SDK event (POST /v1/track/{metric}); the metric comes from the path.

    ``ts`` defaults to the server's receive time and ``platform`` to ``app``.
    """

    influencer_id: Id | None = None
    platform: str | None = "app"
    ts: dt.datetime | None = None
    event_id: Id | None = None
    content_id: Id | None = None
    campaign_id: Id | None = None
    account_id: Id | None = None
    value: float = 1.0
    kind: str = "delta"
    user_id: Id | None = None
    text: str | None = None
    tags: Tags | None = None
    variant: Id | None = None
    properties: dict[str, Any] | None = None

    def to_event(self, metric: str, now: dt.datetime) -> EventIn:
        return EventIn(
            influencer_id=self.influencer_id,
            platform=self.platform,
            metric=metric,
            ts=self.ts if self.ts is not None else now,
            event_id=self.event_id,
            content_id=self.content_id,
            campaign_id=self.campaign_id,
            account_id=self.account_id,
            value=self.value,
            kind=self.kind,
            user_id=self.user_id,
            text=self.text,
            tags=self.tags,
            variant=self.variant,
            properties=self.properties,
        )


class EventInvalid(Exception):
    """Raised by the validator for one event; carries the offending field."""

    def __init__(self, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)


def to_epoch_us(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // _ONE_US


def from_epoch_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """Bounds an event must respect, fixed for one request."""

    now_us: int
    max_future_us: int
    retention_us: int

    @property
    def earliest_us(self) -> int:
        return self.now_us - self.retention_us

    @property
    def latest_us(self) -> int:
        return self.now_us + self.max_future_us


@dataclass(frozen=True, slots=True)
class Directory:
    """What one tenant's registry says about content and accounts, for ingest.

    ``content``: content id -> (influencer id, campaign id), either may be unknown;
    ``accounts``: (platform, platform account id) -> influencer id.
    """

    content: Mapping[str, tuple[str | None, str | None]]
    accounts: Mapping[tuple[str, str], str]

    def fill(self, event: EventIn) -> None:
        """Fill in the influencer and campaign an event leaves out, where known."""
        known = self.content.get(event.content_id) if event.content_id is not None else None
        if known is not None:
            if event.influencer_id is None:
                event.influencer_id = known[0]
            if event.campaign_id is None:
                event.campaign_id = known[1]
        if event.influencer_id is None and event.account_id is not None:
            event.influencer_id = self.accounts.get((str(event.platform), event.account_id))


_UNRESOLVED = (
    "influencer_id is required, unless content_id or account_id is registered "
    "(/v1/content, /v1/influencers)"
)


def validate_event(
    event: EventIn,
    catalog: MetricCatalog,
    rules: ValidationRules,
    directory: Directory | None = None,
) -> int:
    """Normalise ``event`` in place (the influencer and campaign filled in from the
    tenant's ``directory``) and return its timestamp in epoch microseconds.

    Raises EventInvalid naming the first offending field.
    """
    if event.influencer_id is None and directory is None:
        named = event.content_id is not None or event.account_id is not None
        raise EventInvalid("influencer_id", _UNRESOLVED if named else "influencer_id is required")
    if event.platform is None:
        raise EventInvalid("platform", "platform is required")
    platform = _cached_platform(event.platform)
    if platform is None:
        raise EventInvalid(
            "platform", f"unknown platform {event.platform!r}; allowed: {', '.join(PLATFORMS)}"
        )
    event.platform = platform
    if directory is not None:
        directory.fill(event)
        if event.influencer_id is None:
            raise EventInvalid("influencer_id", _UNRESOLVED)
    if event.metric is None:
        raise EventInvalid("metric", "metric is required")
    metric = catalog.normalize(event.metric)
    if metric is None:
        allowed = ", ".join(catalog.allowed())
        raise EventInvalid("metric", f"unknown metric {event.metric!r}; allowed: {allowed}")
    event.metric = metric
    ts_us = _check_ts(event.ts, rules)
    _check_optional_fields(event)
    if event.kind != "snapshot" and catalog.kind_of(metric) is MetricKind.GAUGE:
        raise EventInvalid(
            "kind", f"{metric} is a gauge: send readings with kind 'snapshot', not increments"
        )
    return ts_us


def _check_ts(ts: dt.datetime | None, rules: ValidationRules) -> int:
    if ts is None:
        raise EventInvalid("ts", "ts is required (RFC 3339 with an offset)")
    if ts.tzinfo is None:
        raise EventInvalid("ts", "ts must be RFC 3339 with a UTC offset, e.g. 2026-11-20T14:00:00Z")
    ts_us = to_epoch_us(ts)
    if ts_us > rules.latest_us:
        raise EventInvalid("ts", "ts is more than max_future_seconds in the future")
    if ts_us < rules.earliest_us:
        raise EventInvalid("ts", "ts is older than the retention period (retention_days)")
    return ts_us


def _check_optional_fields(event: EventIn) -> None:
    if event.kind not in KINDS:
        if event.kind.lower() not in KINDS:
            raise EventInvalid("kind", "kind must be 'delta' or 'snapshot'")
        event.kind = event.kind.lower()
    if not math.isfinite(event.value):
        raise EventInvalid("value", "value must be a finite number")
    if event.kind == "snapshot" and event.value < 0:
        raise EventInvalid("value", "a snapshot reading cannot be negative")


@dataclass(frozen=True, slots=True)
class Reading:
    """The last snapshot reading seen for one (tenant, influencer, platform, content, metric)."""

    ts_us: int
    value: float


def snapshot_delta(previous: Reading | None, reading: Reading) -> tuple[float, Reading]:
    """Turn a cumulative reading into an increment against the previous reading.

    The first reading counts from zero; a lower reading gives a negative delta;
    a reading older than the last one seen changes nothing (delta 0, state kept).
    """
    if previous is None:
        return reading.value, reading
    if reading.ts_us < previous.ts_us:
        return 0.0, previous
    return reading.value - previous.value, reading
