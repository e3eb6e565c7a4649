"""Budgets counted in this process, with the ``limits`` library: the ops of a WebSocket
connection, and the store reads that resolving unknown stream tokens costs."""

from __future__ import annotations

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter

from hypemeter.errors import InvalidInput, RateLimited


class Throttle:
    """At most ``rate`` (``limits`` notation, e.g. ``50/second``) per name, in fixed
    windows: a burst of the whole budget at once is allowed, never more per window."""

    def __init__(self, rate: str, *, what: str, setting: str) -> None:
        try:
            self._item: RateLimitItem = parse(rate)
        except ValueError as exc:
            raise InvalidInput(f"bad rate {rate!r}: {exc}", field=setting) from exc
        self._rate = rate
        self._what = what
        self._setting = setting
        self._limiter = FixedWindowRateLimiter(MemoryStorage())

    def another(self) -> Throttle:
        """A throttle of the same rate with counts of its own. The memory storage of
        ``limits`` sweeps all its counts after a hit, so a count per connection in one
        shared storage would cost every message a sweep of every connection."""
        return Throttle(self._rate, what=self._what, setting=self._setting)

    @property
    def limit(self) -> int:
        return int(self._item.amount)

    async def take(self, name: str) -> None:
        """Count one for ``name``; raises RateLimited when its window's budget is spent."""
        if await self._limiter.hit(self._item, name):
            return
        window = max(1, int(self._item.get_expiry()))
        raise RateLimited(
            f"at most {self._item.amount} {self._what} per {window} s ({self._setting})",
            retry_after=window,
            limit=self.limit,
            reset_after=window,
        )
