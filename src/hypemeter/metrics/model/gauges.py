"""Gauge readings (followers): values at a time, summed over accounts, and their growth.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Point = tuple[int, float]  # (ts_us, value); readings are ordered by ts, then by value


@dataclass(slots=True)
class AccountReadings:
    """What the store tells about one account's readings of one gauge metric.

    ``at_start``: the last reading at or before the range's start; ``first``: the
    first reading inside the range; ``bucket_last``: per bucket start, the last
    reading inside that bucket (and inside the range).
    """

    at_start: Point | None = None
    first: Point | None = None
    bucket_last: dict[int, Point] = field(default_factory=dict)

    def start_value(self) -> float | None:
        """Last reading at or before the start, else the first inside the range."""
        point = self.at_start or self.first
        return None if point is None else point[1]


def last_of(a: Point | None, b: Point | None) -> Point | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def first_of(a: Point | None, b: Point | None) -> Point | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def gauge_series(
    accounts: Iterable[AccountReadings], buckets: Sequence[int]
) -> tuple[list[float | None], float | None, list[float | None]]:
    """Per bucket the summed value at the bucket's end, the summed start value, per-bucket growth.

    An account counts once it has a reading at or before the bucket's end; its
    start value is the last reading at or before the range's start, else its
    first reading inside the range. Growth in a bucket is the change of the
    summed value over accounts with a reading in the range, each account's value
    before its first reading being its start value, so growths add up to the
    range's growth.
    """
    values: list[float | None] = [None] * len(buckets)
    growth: list[float | None] = [None] * len(buckets)
    base: float | None = None
    for account in accounts:
        start = account.start_value()
        if start is not None:
            base = (base or 0.0) + start
        current = account.at_start
        previous = start
        for i, bucket in enumerate(buckets):
            current = last_of(current, account.bucket_last.get(bucket))
            if current is not None:
                values[i] = (values[i] or 0.0) + current[1]
            if previous is not None:
                now = current[1] if current is not None else previous
                growth[i] = (growth[i] or 0.0) + (now - previous)
                previous = now
    return values, base, growth
