"""The value of a metric over the stored figures of one row of an answer (a frame).

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from hypemeter.events.model import MetricCatalog, MetricKind
from hypemeter.metrics.model.plans import ENGAGEMENT, FOLLOWERS, Derived, MetricPlan


@dataclass(slots=True)
class Frame:
    """The stored figures behind one row of an answer (a bucket, a group or the totals).

    ``counters`` sums by (platform, metric); ``gauges`` holds per gauge metric the
    sum over accounts of the value at the frame's end (None without any reading);
    ``base`` holds per gauge metric the value at the start of the query's range,
    the denominator of follower-based metrics; ``growth`` the change since it.
    """

    counters: dict[tuple[str, str], float] = field(default_factory=dict)
    gauges: dict[str, float | None] = field(default_factory=dict)
    base: dict[str, float | None] = field(default_factory=dict)
    growth: dict[str, float | None] = field(default_factory=dict)
    unique_users: int | None = None

    def add(self, platform: str, metric: str, value: float) -> None:
        key = (platform, metric)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def total(self, metric: str) -> float:
        # fsum: the same answer whatever order the rows came in.
        return math.fsum(v for (_, m), v in self.counters.items() if m == metric)


def _ratio(numerator: float, denominator: float | None) -> float | None:
    if denominator is None or denominator == 0:
        return None
    return numerator / denominator * 100.0


def _engagement(frame: Frame) -> float:
    return math.fsum(frame.total(m) for m in ENGAGEMENT)


def _growth_pct(frame: Frame) -> float | None:
    growth = frame.growth.get(FOLLOWERS)
    return None if growth is None else _ratio(growth, frame.base.get(FOLLOWERS))


_DERIVED_VALUE: Mapping[Derived, Callable[[Frame, Mapping[tuple[str, str], float]], float | None]]
_DERIVED_VALUE = {
    Derived.ENGAGEMENT: lambda f, _: _engagement(f),
    Derived.ENGAGEMENT_RATE: lambda f, _: _ratio(_engagement(f), f.base.get(FOLLOWERS)),
    Derived.ENGAGEMENT_RATE_BY_VIEWS: lambda f, _: _ratio(_engagement(f), f.total("views")),
    Derived.ENGAGEMENT_RATE_BY_REACH: lambda f, _: _ratio(_engagement(f), f.total("reach")),
    Derived.CTR: lambda f, _: _ratio(f.total("clicks"), f.total("impressions")),
    Derived.CONVERSION_RATE: lambda f, _: _ratio(f.total("conversions"), f.total("clicks")),
    Derived.FOLLOWER_GROWTH: lambda f, _: f.growth.get(FOLLOWERS),
    Derived.FOLLOWER_GROWTH_PCT: lambda f, _: _growth_pct(f),
    Derived.EMV: lambda f, rates: math.fsum(v * rates.get(k, 0.0) for k, v in f.counters.items()),
    Derived.UNIQUE_USERS: lambda f, _: None if f.unique_users is None else float(f.unique_users),
}


# Derived metrics that read counters only: (numerator metrics, denominator or None).
COUNTER_DERIVED: Mapping[str, tuple[tuple[str, ...], str | None]] = {
    Derived.ENGAGEMENT.value: (ENGAGEMENT, None),
    Derived.ENGAGEMENT_RATE_BY_VIEWS.value: (ENGAGEMENT, "views"),
    Derived.ENGAGEMENT_RATE_BY_REACH.value: (ENGAGEMENT, "reach"),
    Derived.CTR.value: (("clicks",), "impressions"),
    Derived.CONVERSION_RATE.value: (("conversions",), "clicks"),
}


def counters_only(plan: MetricPlan) -> bool:
    """Whether every metric of the plan is a counter or derived from counters alone."""
    return not plan.gauges and not plan.unique_users and "emv" not in plan.names


def column_values(
    name: str, sums: Mapping[str, npt.NDArray[np.float64]], size: int
) -> list[float | int | None]:
    """A metric's values over buckets whose counter sums are arrays (a counters-only plan):
    what ``metric_value`` gives for each bucket's frame, as plain numbers."""
    derived = COUNTER_DERIVED.get(name)
    if derived is None:
        return plain_column(sums.get(name, np.zeros(size)))
    inputs, denominator = derived
    numerator = np.zeros(size)
    for metric in inputs:
        if metric in sums:
            numerator = numerator + sums[metric]
    if denominator is None:
        return plain_column(numerator)
    below = sums.get(denominator, np.zeros(size))
    zero = below == 0
    ratio = numerator / np.where(zero, 1.0, below) * 100.0
    values = plain_column(ratio)
    return [None if z else v for v, z in zip(values, zero.tolist(), strict=True)]


def plain_column(values: npt.NDArray[np.float64]) -> list[float | int | None]:
    """``plain_number`` of every element."""
    integral = (values == np.trunc(values)) & (np.abs(values) < 2**53)
    if integral.all():
        return values.astype(np.int64).tolist()  # type: ignore[no-any-return]
    return [
        int(v) if whole else v for v, whole in zip(values.tolist(), integral.tolist(), strict=True)
    ]


_DERIVED_BY_NAME = {d.value: f for d, f in _DERIVED_VALUE.items()}


def metric_value(
    name: str, frame: Frame, catalog: MetricCatalog, emv_rates: Mapping[tuple[str, str], float]
) -> float | None:
    """The value of a stored or derived metric over one frame; None for a zero denominator."""
    derived = _DERIVED_BY_NAME.get(name)
    if derived is not None:
        return derived(frame, emv_rates)
    if catalog.kind_of(name) is MetricKind.GAUGE:
        return frame.gauges.get(name)
    return frame.total(name)


def plain_number(value: float | None) -> float | int | None:
    """Integral values as integers, so counts read as counts in JSON and CSV."""
    if value is None:
        return None
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value
