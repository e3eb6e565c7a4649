"""Readiness checks that anyone may call without costing a store write each time.

``/readyz`` takes no key, so each call must stay cheap. The store's check commits
a write (the only way to know the store is writable); it runs at most once per
period and every call in between gets its last outcome, failure included.
Concurrent callers of an expired check wait for one run instead of starting
their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from hypemeter.clock import Clock
from hypemeter.errors import StoreUnavailable

Check = Callable[[], Awaitable[None]]
# The checks that write: the others (a bus ping, the log's stream info) only read.
WRITING_CHECKS = frozenset({"store"})


class CachedCheck:
    """``check`` run at most once per ``period_s``; calls in between repeat its outcome."""

    def __init__(self, check: Check, clock: Clock, period_s: float) -> None:
        self._check = check
        self._clock = clock
        self._period_us = int(period_s * 1_000_000)
        self._checked_us: int | None = None
        self._failure: StoreUnavailable | None = None
        self._running: asyncio.Task[None] | None = None
        self.runs = 0

    async def __call__(self) -> None:
        now = self._clock.now_us()
        fresh = self._checked_us is not None and 0 <= now - self._checked_us < self._period_us
        if not fresh:
            if self._running is None:
                self._running = asyncio.ensure_future(self._run(now))
            # Shielded: a caller that goes away does not cancel the others' run.
            await asyncio.shield(self._running)
        if self._failure is not None:
            raise StoreUnavailable(self._failure.message, field=self._failure.field)

    async def _run(self, now: int) -> None:
        self.runs += 1
        try:
            await self._check()
        except StoreUnavailable as exc:
            self._failure = exc
        else:
            self._failure = None
        finally:
            self._checked_us = now
            self._running = None


def cached_checks(checks: Mapping[str, Check], clock: Clock, period_s: float) -> dict[str, Check]:
    """``checks`` with every writing one wrapped in a ``CachedCheck``."""
    return {
        name: CachedCheck(check, clock, period_s) if name in WRITING_CHECKS else check
        for name, check in checks.items()
    }
