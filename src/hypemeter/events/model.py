"""The one event schema every source is normalised to, and its validation rules.

Pure: no I/O. Decoding uses msgspec Structs because this is the hot path
(PERF.md); pydantic stays at the HTTP edge for everything else.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from hypemeter.events.catalog import (
    BUILTIN_METRICS,
    CUSTOM_VALUE_LIMIT,
    DEFAULT_VALUE_LIMITS,
    MAX_CUSTOM_METRICS,
    MAX_VALUE_LIMIT,
    METRIC_ALIASES,
    NAME_CACHE_LIMIT,
    PLATFORM_ALIASES,
    PLATFORMS,
    MetricCatalog,
    MetricDefinition,
    MetricKind,
    ValueLimit,
    canonical_name,
    check_custom_metric_name,
    default_value_limit,
    normalize_platform,
)

# The metric catalog and value limits live in ``catalog``; this module re-exports them.
__all__ = [
    "BUILTIN_METRICS",
    "CONNECTOR_ID_PREFIXES",
    "CUSTOM_VALUE_LIMIT",
    "DEFAULT_VALUE_LIMITS",
    "KINDS",
    "MAX_CUSTOM_METRICS",
    "MAX_ID_LENGTH",
    "MAX_TAGS",
    "MAX_VALUE_LIMIT",
    "METRIC_ALIASES",
    "NAME_CACHE_LIMIT",
    "PLATFORMS",
    "PLATFORM_ALIASES",
    "Directory",
    "EventIn",
    "EventInvalid",
    "Id",
    "MetricCatalog",
    "MetricDefinition",
    "MetricKind",
    "Reading",
    "Tags",
    "TrackIn",
    "ValidationRules",
    "ValueLimit",
    "canonical_name",
    "check_custom_metric_name",
    "default_value_limit",
    "from_epoch_us",
    "is_connector_event_id",
    "normalize_platform",
    "snapshot_delta",
    "to_epoch_us",
    "validate_event",
]

# Senders repeat the same few spellings: remember them instead of re-normalising.
_cached_platform = functools.lru_cache(maxsize=NAME_CACHE_LIMIT)(normalize_platform)

KINDS: tuple[str, ...] = ("delta", "snapshot")

# The event ids platform connectors give the events they map (``ig:comment:<id>``,
# ``poll:youtube:<video>:views:<time>``...). Only connectors may write ids in this
# namespace: an API key that could would claim a delivery before it arrives, and the
# real one would then be dropped as a duplicate.
CONNECTOR_ID_PREFIXES: tuple[str, ...] = ("ig:", "fb:", "x:", "li:", "tw:", "tt:", "yt:", "poll:")


def is_connector_event_id(event_id: str | None) -> bool:
    """Whether an event id lies in the namespace reserved for platform connectors."""
    return event_id is not None and event_id.startswith(CONNECTOR_ID_PREFIXES)


MAX_ID_LENGTH = 256
MAX_TAGS = 64

# Length rules are checked by msgspec in C while decoding: this is the hot path.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Tags = Annotated[list[str], msgspec.Meta(max_length=MAX_TAGS)]


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
