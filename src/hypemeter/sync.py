"""Shared configuration across the processes of one deployment.

Each API process keeps tenants, keys and custom metrics in memory. When one
process (or an offline CLI command) changes them in the store, it publishes a
notice on the live bus; every process reloads on the notice, so a key revoked
through one API process stops working on all of them within a bus round trip.
Pub/sub may lose a notice (a reconnect), so processes also reload every
``refresh_seconds`` when the store is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from hypemeter.live.ports import LiveBus, Subscription

log = logging.getLogger("hypemeter.sync")
TOPIC = "config.changed"
Reload = Callable[[], Awaitable[None]]


class SharedConfig:
    def __init__(self, bus: LiveBus, *, refresh_seconds: float) -> None:
        self._bus = bus
        self._refresh = refresh_seconds
        self._reloads: list[Reload] = []
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def on_change(self, reload: Reload) -> None:
        self._reloads.append(reload)

    async def changed(self) -> None:
        """Tell every process (this one included) that shared configuration changed."""
        await self._bus.publish(TOPIC, b"1")

    async def start(self) -> None:
        self._subscription = self._bus.subscribe(TOPIC, max_pending=1)
        self._task = asyncio.create_task(self._follow(self._subscription), name="config-sync")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            await self._subscription.aclose()

    async def _follow(self, subscription: Subscription) -> None:
        notices = aiter(subscription)
        timeout = self._refresh if self._refresh > 0 else None
        while True:
            try:
                async with asyncio.timeout(timeout):
                    await anext(notices)
            except TimeoutError:
                pass
            except StopAsyncIteration:
                return
            await self._reload()

    async def _reload(self) -> None:
        for reload in self._reloads:
            try:
                await reload()
            except Exception:  # the next notice or period tries again
                log.exception("could not reload shared configuration")
        self.reloads += 1
