"""The caching MetricsStore: recent hourly sums in memory, fed by the change feed.

It wraps a backend's store. At start a task subscribes to the change feed (every
tenant), loads the windows once from the store (``cache_load``, one snapshot at
commit ``seq``) off the event loop, then adds every later change set. Queries the
windows hold (whole hours of the last days: counters, counter matrices, trending)
are answered from memory; everything else, and everything while the windows are
not loaded, is answered by the store.

Answers equal the store's: a change set is added once (those at or below the
load's ``seq`` are in the load), and a query first adds whatever change sets the
feed already delivered, so an answer after an ingest's acknowledgement holds its
events. A gap in the feed (an erasure or a purge in any process is one, see
``ChangeFeed.rewritten``), or an erasure or purge in this process, drops the
windows; they are loaded again while the store answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from hypemeter.changes.codec import ChangeSet
from hypemeter.changes.feed import ChangeFeed, ChangeSubscription
from hypemeter.clock import Clock
from hypemeter.metrics.cache_rows import add_changes, loaded
from hypemeter.metrics.engagement_window import EngagementWindow
from hypemeter.metrics.model import Grain
from hypemeter.metrics.ports import CacheableMetricsStore, MetricsStore, PinnedView
from hypemeter.metrics.queries import (
    Answer,
    CounterMatrix,
    CounterQuery,
    CounterRow,
    Filters,
    GaugeQuery,
    GaugeRow,
    TrendingQuery,
    TrendingRow,
    UserRow,
)
from hypemeter.metrics.sums import Block, reduced
from hypemeter.metrics.windows import CounterWindow, window_start

log = logging.getLogger("hypemeter.metrics.cache")
WINDOW_DAYS = 8  # a 7-day range ending at the end of the current hour, and reading lag
MAX_PENDING = 20_000  # change sets buffered while loading
RETRY_SECONDS = 1.0
COMPACT_SECONDS = 1.0
COMPACT_BLOCKS = 6  # a log with more blocks is merged into one, off the event loop
# Change sets arriving within this long are added together, in a worker thread: ingest's
# event loop never sorts them (queries add what is still pending themselves).
ADD_EVERY_SECONDS = 0.05


@dataclass(slots=True)
class _Windows:
    counters: CounterWindow
    engagement: EngagementWindow
    seq: int  # the load's commit: change sets up to it are in the load
    rewrites: int


class CachedMetricsStore:
    """MetricsStore port around a store; see the module docstring."""

    def __init__(
        self,
        store: CacheableMetricsStore,
        feed: ChangeFeed,
        clock: Clock,
        *,
        days: int = WINDOW_DAYS,
    ) -> None:
        self._store = store
        self._feed = feed
        self._clock = clock
        self._days = days
        self._windows: _Windows | None = None
        self._sub: ChangeSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._closing = False
        self._reload = False
        self._adding: asyncio.Future[bool] | None = None  # an add running in a thread
        self._held: list[ChangeSet] = []  # taken from the feed, not added yet
        self.loads = 0

    def __getattr__(self, name: str) -> Any:  # the store's extras (``wait_folded``)
        return getattr(self._store, name)

    @property
    def loaded(self) -> bool:
        return self._windows is not None

    async def start(self) -> None:
        await self._store.start()
        self._closing = False
        self._task = asyncio.create_task(self._follow(), name="hypemeter-query-cache")
        self._compactor = asyncio.create_task(self._compact(), name="hypemeter-cache-compact")

    async def aclose(self) -> None:
        self._closing = True
        if self._sub is not None:
            self._sub.end()
        for task in (self._task, self._compactor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._store.aclose()

    # -- following the feed ----------------------------------------------------------

    async def _follow(self) -> None:
        self._reload = True
        while self._reload and not self._closing:
            self._reload = False
            sub = self._sub = self._feed.subscribe(None, max_pending=MAX_PENDING)
            try:
                await sub.ready()
                await self._load()
                async for change in sub:
                    if change is None:
                        self._reload = True  # a gap: change sets were lost
                        break
                    self._held.append(change)  # a query meanwhile adds it first
                    await asyncio.sleep(ADD_EVERY_SECONDS)
                    more = sub.take()  # what arrived meanwhile, added together
                    if more is None or self._reload:
                        self._reload = True
                        break
                    batch, self._held = [*self._held, *more], []
                    if batch and not await self._add_elsewhere(batch):
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the query cache could not load; the store answers meanwhile")
                self._reload = True
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                self._windows = None
                self._held = []
                await sub.aclose()

    async def _compact(self) -> None:
        """Merge the blocks that adding change sets left behind, in a worker thread:
        queries read one block per log instead of many."""
        while not self._closing:
            await asyncio.sleep(COMPACT_SECONDS)
            windows = self._windows
            if windows is None:
                continue
            await self._idle()
            for log_ in [*windows.counters.logs_of_all(), *windows.engagement.logs_of_all()]:
                await self._idle()
                old = log_.compactable(COMPACT_BLOCKS)
                if old is None:
                    continue
                try:
                    merged = await asyncio.to_thread(reduced, Block.concat(old), log_.since_us)
                except Exception:
                    log.exception("compacting the query cache failed")
                    continue
                await self._idle()
                log_.compacted(old, merged)

    async def _load(self) -> None:
        rewrites = self._store.rewrites()
        since = window_start(self._clock.now_us(), self._days)
        load = await self._store.cache_load(since)
        counters, engagement = await asyncio.to_thread(loaded, load, since)
        self._windows = _Windows(counters, engagement, load.seq, rewrites)
        self.loads += 1
        self._catch_up()

    async def _add_elsewhere(self, changes: list[ChangeSet]) -> bool:
        """``_add`` in a worker thread (queries and compaction wait for it meanwhile)."""
        self._adding = asyncio.ensure_future(asyncio.to_thread(self._add, changes))
        try:
            return await self._adding
        except Exception:  # never a failed query: the store answers until a reload
            log.exception("the query cache could not add change sets; reloading it")
            self._drop()
            return False
        finally:
            self._adding = None

    async def _idle(self) -> None:
        """Until no add runs in a thread (the caller then uses the windows at once)."""
        while (adding := self._adding) is not None and not adding.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(adding)

    def _add(self, changes: list[ChangeSet]) -> bool:
        """Add change sets; False when the windows are gone (reload)."""
        windows = self._windows
        if windows is None:
            return False
        fresh = [c for c in changes if c.seq > windows.seq]
        if fresh:
            since = window_start(self._clock.now_us(), self._days)
            windows.counters.advance(since)
            windows.engagement.advance(since)
            add_changes(windows.counters, windows.engagement, fresh)
        return True

    def _catch_up(self) -> _Windows | None:
        """Add the change sets delivered so far; the windows, or None (the store answers)."""
        windows, sub = self._windows, self._sub
        if windows is None or sub is None:
            return None
        if self._store.rewrites() != windows.rewrites:
            self._drop()
            return None
        taken = sub.take()
        if taken is None:
            self._drop()
            return None
        changes, self._held = [*self._held, *taken], []
        try:
            self._add(changes)
        except Exception:  # never a failed query: the store answers until a reload
            log.exception("the query cache could not add change sets; reloading it")
            self._drop()
            return None
        return windows

    def _drop(self) -> None:
        """Forget the windows and load them again."""
        self._windows = None
        self._held = []
        self._reload = True
        if self._sub is not None:
            self._sub.end()

    # -- the port --------------------------------------------------------------------

    async def counters(self, tenant_id: str, query: CounterQuery) -> Answer[CounterRow]:
        await self._idle()
        windows = self._catch_up()
        found = None if windows is None else windows.counters.counters(tenant_id, query)
        return found if found is not None else await self._store.counters(tenant_id, query)

    async def counter_matrix(self, tenant_id: str, query: CounterQuery) -> CounterMatrix | None:
        await self._idle()
        windows = self._catch_up()
        found = None if windows is None else windows.counters.matrix(tenant_id, query)
        return found if found is not None else await self._store.counter_matrix(tenant_id, query)

    async def trending(self, tenant_id: str, query: TrendingQuery) -> Answer[TrendingRow]:
        await self._idle()
        windows = self._catch_up()
        found = None if windows is None else windows.engagement.trending(tenant_id, query)
        return found if found is not None else await self._store.trending(tenant_id, query)

    async def gauges(self, tenant_id: str, query: GaugeQuery) -> Answer[GaugeRow]:
        return await self._store.gauges(tenant_id, query)

    async def unique_users(
        self,
        tenant_id: str,
        start_us: int,
        end_us: int,
        filters: Filters,
        *,
        grain: Grain | None,
        by: str | None,
        engagement_metrics: tuple[str, ...],
    ) -> Answer[tuple[str | None, int | None, int]]:
        return await self._store.unique_users(
            tenant_id,
            start_us,
            end_us,
            filters,
            grain=grain,
            by=by,
            engagement_metrics=engagement_metrics,
        )

    async def emv_rates(self, tenant_id: str) -> dict[tuple[str, str], float]:
        return await self._store.emv_rates(tenant_id)

    def pinned(self) -> AbstractAsyncContextManager[PinnedView]:
        return self._store.pinned()

    async def user_activity(
        self,
        tenant_id: str,
        since_us: int,
        *,
        min_engagement: float,
        engagement_metrics: tuple[str, ...],
        after: tuple[float, str] | None,
        limit: int,
    ) -> Answer[UserRow]:
        return await self._store.user_activity(
            tenant_id,
            since_us,
            min_engagement=min_engagement,
            engagement_metrics=engagement_metrics,
            after=after,
            limit=limit,
        )

    async def set_emv_rates(
        self, tenant_id: str, rates: dict[tuple[str, str], float | None]
    ) -> None:
        await self._store.set_emv_rates(tenant_id, rates)

    async def rebuild(self, progress: Callable[[int, int], None]) -> int:
        return await self._store.rebuild(progress)


def cached(
    store: MetricsStore, feed: ChangeFeed, clock: Clock, *, days: int = WINDOW_DAYS
) -> MetricsStore:
    """``store`` behind the query cache of ``days`` days when it can load one (and
    ``days`` is not 0), else ``store`` itself."""
    if days and isinstance(store, CacheableMetricsStore):
        return CachedMetricsStore(store, feed, clock, days=days)
    return store
