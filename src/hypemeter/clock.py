"""Time is injected so that pure logic and tests stay deterministic."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_us(self) -> int:
        """Current UTC time in microseconds since the Unix epoch."""


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000


class FixedClock:
    """A clock for tests: stands still until moved."""

    def __init__(self, now_us: int) -> None:
        self._now = now_us

    def now_us(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1_000_000)
