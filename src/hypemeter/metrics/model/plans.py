"""Metric names of the query API: stored, alias and derived ones, and what each reads.

Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hypemeter.errors import InvalidInput
from hypemeter.events.model import MetricCatalog, MetricKind

ENGAGEMENT = ("likes", "comments", "shares", "saves")
FOLLOWERS = "followers"


class Derived(enum.StrEnum):
    ENGAGEMENT = "engagement"
    ENGAGEMENT_RATE = "engagement_rate"
    ENGAGEMENT_RATE_BY_VIEWS = "engagement_rate_by_views"
    ENGAGEMENT_RATE_BY_REACH = "engagement_rate_by_reach"
    CTR = "ctr"
    CONVERSION_RATE = "conversion_rate"
    FOLLOWER_GROWTH = "follower_growth"
    FOLLOWER_GROWTH_PCT = "follower_growth_pct"
    EMV = "emv"
    UNIQUE_USERS = "unique_users"


# The stored metrics each derived metric reads.
DERIVED_INPUTS: Mapping[Derived, tuple[str, ...]] = {
    Derived.ENGAGEMENT: ENGAGEMENT,
    Derived.ENGAGEMENT_RATE: (*ENGAGEMENT, FOLLOWERS),
    Derived.ENGAGEMENT_RATE_BY_VIEWS: (*ENGAGEMENT, "views"),
    Derived.ENGAGEMENT_RATE_BY_REACH: (*ENGAGEMENT, "reach"),
    Derived.CTR: ("clicks", "impressions"),
    Derived.CONVERSION_RATE: ("conversions", "clicks"),
    Derived.FOLLOWER_GROWTH: (FOLLOWERS,),
    Derived.FOLLOWER_GROWTH_PCT: (FOLLOWERS,),
    Derived.EMV: (),
    Derived.UNIQUE_USERS: (),
}
FOLLOWER_BASED = frozenset(
    {Derived.ENGAGEMENT_RATE, Derived.FOLLOWER_GROWTH, Derived.FOLLOWER_GROWTH_PCT}
)


@dataclass(frozen=True, slots=True)
class MetricPlan:
    """What answering a list of requested metrics needs from the store."""

    names: tuple[str, ...]
    counters: tuple[str, ...]
    gauges: tuple[str, ...]
    unique_users: bool


def plan_metrics(
    raw: str | Iterable[str],
    catalog: MetricCatalog,
    emv_metrics: Iterable[str] = (),
    *,
    field: str = "metrics",
) -> MetricPlan:
    """Validate metric names (stored, alias or derived) and list the stored ones they read.

    ``field`` is the request parameter errors name.
    """
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names: list[str] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        name = _metric_name(text, catalog, field)
        if name not in names:
            names.append(name)
    if not names:
        raise InvalidInput(
            f"name at least one metric; allowed: {', '.join(allowed_metrics(catalog))}",
            field=field,
        )
    counters: list[str] = []
    gauges: list[str] = []
    for name in names:
        inputs: Iterable[str]
        if name in Derived.__members__.values():
            derived = Derived(name)
            inputs = emv_metrics if derived is Derived.EMV else DERIVED_INPUTS[derived]
        else:
            inputs = (name,)
        for stored in inputs:
            target = gauges if catalog.kind_of(stored) is MetricKind.GAUGE else counters
            if stored not in target:
                target.append(stored)
    return MetricPlan(
        tuple(names), tuple(counters), tuple(gauges), Derived.UNIQUE_USERS.value in names
    )


def _metric_name(text: str, catalog: MetricCatalog, field: str) -> str:
    lowered = text.lower()
    if lowered in Derived.__members__.values():
        return lowered
    name = catalog.normalize(text)
    if name is None:
        allowed = ", ".join(allowed_metrics(catalog))
        raise InvalidInput(f"unknown metric {text!r}; allowed: {allowed}", field=field)
    return name


def allowed_metrics(catalog: MetricCatalog) -> list[str]:
    return [*catalog.allowed(), *(d.value for d in Derived)]


# -- EMV ----------------------------------------------------------------------------

# Earned media value per unit, in the tenant's currency, for every platform unless a
# tenant sets its own. Orders of magnitude in line with what paid media costs
# (CPM around 5 for impressions, a paid click around 1), meant to be replaced.
DEFAULT_EMV_RATES: Mapping[str, float] = {
    "impressions": 0.005,
    "reach": 0.005,
    "views": 0.02,
    "likes": 0.10,
    "comments": 0.50,
    "shares": 0.80,
    "saves": 0.60,
    "clicks": 1.00,
    "conversions": 10.00,
}


def emv_table(
    platforms: Iterable[str], overrides: Mapping[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """(platform, metric) -> unit value: the defaults for every platform, then the overrides."""
    table = {(p, m): v for p in platforms for m, v in DEFAULT_EMV_RATES.items()}
    table.update(overrides)
    return table
