"""What a live subscription asks for, checked; and the messages' shapes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from hypemeter.backends.ports import Filters
from hypemeter.errors import InvalidInput
from hypemeter.events.model import PLATFORMS, normalize_platform
from hypemeter.metrics.model import DAY_US, Grain, floor_to, parse_instant

FILTER_FIELDS = ("influencer_id", "campaign_id", "content_id", "platform")
# The field a subscription is routed by: the narrowest it names.
PRIMARY = ("content_id", "campaign_id", "influencer_id")
# The route of a filter that names none of them: every change of the tenant.
WHOLE_TENANT = ("*", "*")
LIVE_GRAINS = (Grain.MINUTE, Grain.HOUR, Grain.DAY)
DEFAULT_METRICS = "likes,comments,shares"


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """Equality filters; naming no influencer, campaign or content follows the whole tenant."""

    influencer_id: str | None = None
    campaign_id: str | None = None
    content_id: str | None = None
    platform: str | None = None

    @property
    def primary(self) -> tuple[str, str]:
        for name in PRIMARY:
            value = getattr(self, name)
            if value is not None:
                return name, value
        return WHOLE_TENANT

    def filters(self) -> Filters:
        return Filters(self.influencer_id, self.platform, self.campaign_id, self.content_id)

    def matches(self, row: dict[str, Any]) -> bool:
        return all(
            getattr(self, name) is None or row.get(name) == getattr(self, name)
            for name in FILTER_FIELDS
        )

    def within(self, allowed: LiveFilter) -> bool:
        """Whether every field ``allowed`` sets is set here to the same value."""
        return all(
            getattr(allowed, name) is None or getattr(self, name) == getattr(allowed, name)
            for name in FILTER_FIELDS
        )

    def payload(self) -> dict[str, str]:
        return {n: getattr(self, n) for n in FILTER_FIELDS if getattr(self, n) is not None}


def parse_filter(raw: Any, field: str = "filter") -> LiveFilter:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{field} must be an object", field=field)
    unknown = sorted(set(raw) - set(FILTER_FIELDS))
    if unknown:
        raise InvalidInput(
            f"unknown {field} field(s) {', '.join(unknown)}; allowed: {', '.join(FILTER_FIELDS)}",
            field=f"{field}.{unknown[0]}",
        )
    values: dict[str, str | None] = {}
    for name in FILTER_FIELDS:
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not value or len(value) > 256):
            raise InvalidInput(
                f"{field}.{name} must be a non-empty string of at most 256 characters",
                field=f"{field}.{name}",
            )
        values[name] = value
    if values["platform"] is not None:
        platform = normalize_platform(values["platform"])
        if platform is None:
            raise InvalidInput(
                f"unknown platform {values['platform']!r}; allowed: {', '.join(PLATFORMS)}",
                field=f"{field}.platform",
            )
        values["platform"] = platform
    return LiveFilter(**values)


def parse_grain(raw: Any, field: str = "granularity") -> Grain:
    if raw is None:
        return Grain.MINUTE
    if not isinstance(raw, str) or raw not in {g.value for g in LIVE_GRAINS}:
        raise InvalidInput(f"{field} must be minute, hour or day", field=field)
    return Grain(raw)


def parse_metrics(raw: Any, field: str = "metrics") -> str:
    """Metric names as the comma-separated text the metric planner reads."""
    if raw is None:
        return DEFAULT_METRICS
    if isinstance(raw, str):
        names = [n.strip() for n in raw.split(",") if n.strip()]
    elif isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        names = [n.strip() for n in raw]
    else:
        raise InvalidInput(f"{field} must be a list of metric names", field=field)
    if not names or not all(names):
        raise InvalidInput(f"{field} must name at least one metric", field=field)
    return ",".join(dict.fromkeys(names))


def parse_since(raw: Any, now_us: int, field: str = "since") -> int:
    """Where totals start: the given instant, else the start of the current UTC day."""
    if raw is None:
        return floor_to(now_us, DAY_US)
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be an RFC 3339 instant", field=field)
    since = parse_instant(raw, field)
    if since > now_us:
        raise InvalidInput(f"{field} is in the future", field=field)
    return since


def iso(ts_us: int) -> str:
    """Live messages' instants: RFC 3339 in UTC, always with microseconds (fixed width,
    unlike the query API's ``format_instant``, which drops zero microseconds)."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ts_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
