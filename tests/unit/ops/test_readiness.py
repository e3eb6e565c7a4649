"""/readyz's cached probe: the store's write check runs at most once per period."""

from __future__ import annotations

import asyncio

import pytest

from hypemeter.clock import FixedClock
from hypemeter.errors import StoreUnavailable
from hypemeter.ops.readiness import CachedCheck, cached_checks


class Probe:
    def __init__(self) -> None:
        self.calls = 0
        self.failing: str | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise StoreUnavailable(self.failing)


async def test_calls_within_the_period_reuse_the_last_check() -> None:
    clock, probe = FixedClock(1_000_000), Probe()
    check = CachedCheck(probe, clock, period_s=5)

    for _ in range(100):
        await check()
        clock.advance(0.01)
    assert probe.calls == 1

    clock.advance(5)
    await check()
    assert probe.calls == 2


async def test_a_failure_is_repeated_until_the_next_check() -> None:
    clock, probe = FixedClock(0), Probe()
    check = CachedCheck(probe, clock, period_s=5)
    probe.failing = "disk full"

    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="disk full"):
            await check()
    assert probe.calls == 1

    probe.failing = None
    clock.advance(5)
    await check()
    assert probe.calls == 2


async def test_concurrent_callers_share_one_run() -> None:
    clock, probe = FixedClock(0), Probe()
    probe.gate = asyncio.Event()
    check = CachedCheck(probe, clock, period_s=5)

    waiting = [asyncio.ensure_future(check()) for _ in range(20)]
    await asyncio.sleep(0)
    probe.gate.set()
    await asyncio.gather(*waiting)
    assert probe.calls == 1


async def test_only_the_writing_check_is_cached() -> None:
    clock, store, bus = FixedClock(0), Probe(), Probe()
    checks = cached_checks({"store": store, "bus": bus}, clock, period_s=5)

    for _ in range(3):
        await checks["store"]()
        await checks["bus"]()
    assert (store.calls, bus.calls) == (1, 3)
