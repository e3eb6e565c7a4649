"""Per-key rate limits on requests and on events, with the ``limits`` library."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from hypemeter.errors import InvalidInput, RateLimited


@dataclass(frozen=True, slots=True)
class RateState:
    """Where a key stands in its current window, for the RateLimit headers."""

    limit: int
    remaining: int
    reset_after: int

    def headers(self) -> dict[str, str]:
        values = {
            "Limit": str(self.limit),
            "Remaining": str(self.remaining),
            "Reset": str(self.reset_after),
        }
        out = {f"RateLimit-{k}": v for k, v in values.items()}
        out.update({f"X-RateLimit-{k}": v for k, v in values.items()})
        return out


class RateLimiter:
    """Fixed-window limits per API key; the storage is chosen by URI (``async+memory://``).

    The asyncio flavour of ``limits`` expires its counters with event-loop tasks,
    not a timer thread per window.
    """

    def __init__(self, *, requests: str, events: str, storage_uri: str = "async+memory://") -> None:
        try:
            self._requests: RateLimitItem = parse(requests)
            self._events: RateLimitItem = parse(events)
        except ValueError as exc:
            raise InvalidInput(f"bad rate limit: {exc}", field="rate_limit") from exc
        self._limiter = FixedWindowRateLimiter(storage_from_string(storage_uri))

    async def hit_request(self, key_id: str) -> RateState:
        return await self._hit(self._requests, key_id, 1, "requests")

    async def hit_events(self, key_id: str, count: int) -> RateState:
        return await self._hit(self._events, key_id, count, "events")

    async def _hit(self, item: RateLimitItem, key_id: str, cost: int, what: str) -> RateState:
        allowed = await self._limiter.hit(item, key_id, what, cost=cost)
        stats = await self._limiter.get_window_stats(item, key_id, what)
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        state = RateState(item.amount, max(0, stats.remaining), reset_after)
        if not allowed:
            raise RateLimited(
                f"rate limit of {item.amount} {what} per {item.GRANULARITY.name} "
                f"exceeded for this key",
                retry_after=reset_after,
                limit=item.amount,
                reset_after=reset_after,
            )
        return state
