"""Per-key rate limits on requests and on events, with the ``limits`` library."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

from hypemeter.auth.model import RateState
from hypemeter.errors import InvalidInput, RateLimited, StoreUnavailable

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool

KEY_PREFIX = "hypemeter:ratelimit"


class RateLimiter:
    """Fixed-window limits per API key, counted where ``storage`` says.

    ``memory://`` counts in this process (the asyncio flavour of ``limits`` expires
    its counters with event-loop tasks, not a timer thread per window);
    ``redis://host:port/db`` (or ``rediss://``) counts in Redis, so that every API
    process draws on one budget per key.
    """

    def __init__(self, *, requests: str, events: str, storage: str = "memory://") -> None:
        try:
            self._requests: RateLimitItem = parse(requests)
            self._events: RateLimitItem = parse(events)
        except ValueError as exc:
            raise InvalidInput(f"bad rate limit: {exc}", field="rate_limit") from exc
        self._pool: ConnectionPool | None = None
        self._limiter = FixedWindowRateLimiter(self._open_storage(storage))

    def _open_storage(self, dsn: str) -> Storage:
        scheme = urlparse(dsn).scheme
        if scheme == "memory":
            return MemoryStorage()
        if scheme in ("redis", "rediss"):
            try:
                from redis.asyncio import ConnectionPool
            except ModuleNotFoundError as exc:
                raise InvalidInput(
                    f"rate limit storage {scheme}:// needs the Redis driver: "
                    "pip install 'hypemeter[cluster]'",
                    field="rate_limit_storage",
                ) from exc
            # Our own pool, so that aclose can release its connections.
            pool = ConnectionPool.from_url(dsn)
            self._pool = pool
            return RedisStorage(
                f"async+{dsn}",
                implementation="redispy",
                connection_pool=pool,  # type: ignore[arg-type]  # handed on to redis-py
                key_prefix=KEY_PREFIX,
                wrap_exceptions=True,
            )
        raise InvalidInput(
            f"unsupported rate limit storage {scheme!r}; this build supports memory:// "
            "and redis://host:port/db",
            field="rate_limit_storage",
        )

    async def aclose(self) -> None:
        """Release the storage's connections; called at shutdown."""
        if self._pool is not None:
            await self._pool.aclose()

    async def hit_request(self, key_id: str) -> RateState:
        return await self._hit(self._requests, key_id, 1, "requests")

    async def hit_events(self, key_id: str, count: int) -> RateState:
        return await self._hit(self._events, key_id, count, "events")

    async def _hit(self, item: RateLimitItem, key_id: str, cost: int, what: str) -> RateState:
        try:
            allowed = await self._limiter.hit(item, key_id, what, cost=cost)
            stats = await self._limiter.get_window_stats(item, key_id, what)
        except StorageError as exc:
            raise StoreUnavailable(f"rate limit storage unavailable: {exc}") from exc
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
