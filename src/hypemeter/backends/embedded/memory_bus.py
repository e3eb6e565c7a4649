"""In-process live bus: the embedded default (``memory://``)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator


class MemorySubscription:
    def __init__(self, bus: MemoryLiveBus, topic: str, max_pending: int) -> None:
        self._bus = bus
        self.topic = topic
        self._pending: deque[bytes] = deque(maxlen=max_pending)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def deliver(self, message: bytes) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(message)
        self._ready.set()

    async def __anext__(self) -> bytes:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._pending.popleft()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def aclose(self) -> None:
        self._closed = True
        self._ready.set()
        self._bus.forget(self)


class MemoryLiveBus:
    """Delivery is a non-blocking append to each subscriber's bounded buffer."""

    def __init__(self) -> None:
        self._topics: dict[str, set[MemorySubscription]] = {}

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        for subs in list(self._topics.values()):
            for sub in list(subs):
                await sub.aclose()
        self._topics.clear()

    async def publish(self, topic: str, message: bytes) -> None:
        for sub in self._topics.get(topic, ()):
            sub.deliver(message)

    def interested(self, topic: str) -> bool:
        return topic in self._topics

    def subscribe(self, topic: str, *, max_pending: int = 1000) -> MemorySubscription:
        sub = MemorySubscription(self, topic, max_pending)
        self._topics.setdefault(topic, set()).add(sub)
        return sub

    def forget(self, sub: MemorySubscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]
