"""What a live subscription asks for, checked; what a caller may follow; and the
messages' shapes."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from hypemeter.auth.model import KeyLimits
from hypemeter.errors import Forbidden, InvalidInput
from hypemeter.events.model import PLATFORMS, normalize_platform
from hypemeter.metrics.model import DAY_US, Grain, floor_to, parse_instant
from hypemeter.metrics.queries import Filters

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


def parse_since(
    raw: Any, now_us: int, field: str = "since", *, retention_days: int | None = None
) -> int:
    """Where totals start: the given instant, else the start of the current UTC day.

    With ``retention_days``, an instant older than the retention is refused: nothing
    older is kept, and each distinct ``since`` costs a channel and a snapshot query.
    """
    if raw is None:
        return floor_to(now_us, DAY_US)
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be an RFC 3339 instant", field=field)
    since = parse_instant(raw, field)
    if since > now_us:
        raise InvalidInput(f"{field} is in the future", field=field)
    if retention_days is not None and since < now_us - retention_days * DAY_US:
        raise InvalidInput(
            f"{field} may reach back at most {retention_days} days (the retention, retention_days)",
            field=field,
        )
    return since


# -- what a caller may follow --------------------------------------------------------------

SHOWN_VALUES = 10  # allowed values an error message lists at most


def _listed(values: frozenset[str] | tuple[str, ...]) -> str:
    names = sorted(values)
    more = len(names) - SHOWN_VALUES
    return ", ".join(names[:SHOWN_VALUES]) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class TokenRights:
    """What a stream token carries. Every op of a connection opened with the token is
    bound by all of it: the filter (the op's filter may only narrow it), the metrics
    (subscriptions name only these; a tail sends only events of these), and ``tail``,
    the right to receive raw events (user ids and comment text), off unless asked for.
    """

    filter: LiveFilter
    metrics: tuple[str, ...]
    tail: bool = False

    def check(
        self, live_filter: LiveFilter, metrics: tuple[str, ...] | None, *, tail: bool
    ) -> None:
        """Raise Forbidden unless an op with this filter (and metrics) fits the rights."""
        if tail and not self.tail:
            raise Forbidden(
                'this stream token carries no right to tail; ask for one with "tail": true',
                field="op",
            )
        if not live_filter.within(self.filter):
            raise Forbidden(
                f"this stream token is limited to {self.filter.payload()}", field="filter"
            )
        if metrics is not None and not set(metrics) <= set(self.metrics):
            raise Forbidden(
                f"this stream token is limited to the metrics {', '.join(self.metrics)}",
                field="metrics",
            )


_LIMITED_FIELDS = (
    ("influencer_id", "influencers"),
    ("campaign_id", "campaigns"),
    ("platform", "platforms"),
)


def check_limits(
    limits: KeyLimits,
    live_filter: LiveFilter,
    metrics: tuple[str, ...] | None,
    *,
    field: str = "filter",
) -> None:
    """Raise Forbidden unless a key's limits allow the filter and metrics.

    A key limited to influencers (campaigns, platforms) may follow only a filter that
    names one of them, so a filter of the whole tenant is refused; a key limited to
    metrics may name only those.
    """
    for name, limit in _LIMITED_FIELDS:
        allowed: frozenset[str] = getattr(limits, limit)
        if allowed and getattr(live_filter, name) not in allowed:
            raise Forbidden(
                f"this key is limited to the {limit} {_listed(allowed)}: "
                f"{field}.{name} must name one of them",
                field=f"{field}.{name}",
            )
    if metrics is not None and limits.metrics and not set(metrics) <= limits.metrics:
        raise Forbidden(
            f"this key is limited to the metrics {_listed(limits.metrics)}", field="metrics"
        )


def tail_metrics(rights: TokenRights | None, limits: KeyLimits) -> frozenset[str] | None:
    """The metrics whose events a tail may send; None for any."""
    bounds = [frozenset(rights.metrics)] if rights is not None else []
    if limits.metrics:
        bounds.append(limits.metrics)
    return frozenset.intersection(*bounds) if bounds else None


# -- abuse limits --------------------------------------------------------------------------


@dataclass(slots=True)
class Strikes:
    """Ops of one connection refused in a row by its rate limit; ``limit`` of them in a
    row mean the client keeps flooding, and the connection is closed."""

    limit: int
    count: int = 0

    def allowed(self) -> None:
        self.count = 0

    def refused(self) -> bool:
        """Count a refusal; whether the connection must now be closed."""
        self.count += 1
        return self.count >= self.limit


class UnknownTokens:
    """Hashes of tokens the store did not know, remembered for ``ttl_s`` so that the
    same made-up token costs at most one store read per ``ttl_s``; at most
    ``max_entries`` of them (the oldest go first). Times are monotonic seconds,
    passed in."""

    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def holds(self, digest: str, now: float) -> bool:
        until = self._until.get(digest)
        if until is None:
            return False
        if until <= now:
            del self._until[digest]
            return False
        return True

    def add(self, digest: str, now: float) -> None:
        self._until.pop(digest, None)
        self._until[digest] = now + self._ttl_s
        while len(self._until) > self._max:
            self._until.popitem(last=False)


def iso(ts_us: int) -> str:
    """Live messages' instants: RFC 3339 in UTC, always with microseconds (fixed width,
    unlike the query API's ``format_instant``, which drops zero microseconds)."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ts_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
