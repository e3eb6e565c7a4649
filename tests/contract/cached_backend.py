"""A store backend whose metrics store sits behind the query cache, as the app wires it:
appends are announced on a change feed (the commit step), the cache follows the feed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hypemeter.changes.feed import ChangeFeed
from hypemeter.events.batch import EventBatch
from hypemeter.events.commit import CommitStep
from hypemeter.events.ports import AppendResult, EventStore
from hypemeter.metrics.cache import CachedMetricsStore
from hypemeter.metrics.ports import CacheableMetricsStore, MetricsStore


class AnnouncingStore:
    """An event store whose appends go through the commit step (and so the feed)."""

    def __init__(self, store: EventStore, feed: ChangeFeed) -> None:
        self.inner = store
        self._step = CommitStep(store, feed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        return await self._step.append(tenant_id, batch)


def _unwrapped(value: object) -> object:
    if isinstance(value, AnnouncingStore):
        return value.inner
    if isinstance(value, CachedMetricsStore):
        return value._store
    return value


class CachedBackend:
    """``inner``'s stores, with the metrics store behind a CachedMetricsStore."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.feed = ChangeFeed()
        self._caches: list[CachedMetricsStore] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return attr(*(_unwrapped(a) for a in args), **kwargs)

        return call

    def _database_of(self, store: object) -> Any:
        return self._inner._database_of(_unwrapped(store))

    async def open_event_store(self, **kwargs: Any) -> EventStore:
        store = await self._inner.open_event_store(**kwargs)
        return AnnouncingStore(store, self.feed)  # type: ignore[return-value]

    async def open_metrics_store(self, events: EventStore) -> MetricsStore:
        inner = await self._inner.open_metrics_store(_unwrapped(events))
        assert isinstance(inner, CacheableMetricsStore)
        cache = CachedMetricsStore(inner, self.feed, self._inner.clock)
        await cache.start()
        self._caches.append(cache)
        await _until(lambda: cache.loaded)
        return cache

    async def aclose(self) -> None:
        for cache in self._caches:
            await cache.aclose()
        await self.feed.aclose()
        await self._inner.aclose()


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(3000):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the query cache did not load")
