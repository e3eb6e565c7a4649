"""The bounded subscriber buffer every live bus hands out (see ``ports.Subscription``)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

GAP = b""  # what a reader receives where messages may have been lost


class BufferedSubscription:
    """Messages of one topic in a deque of ``max_pending``; a full one loses its oldest.

    Delivery is a synchronous append, so a bus never waits for its slowest reader.
    ``on_close`` tells the bus that handed it out to forget it.
    """

    def __init__(
        self,
        topic: str,
        max_pending: int,
        on_close: Callable[[BufferedSubscription], None],
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.topic = topic
        self._on_close = on_close
        self._ready_fn = ready
        self._pending: deque[bytes] = deque(maxlen=max_pending)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    async def ready(self) -> None:
        """Until the bus delivers every message published from now on."""
        if self._ready_fn is not None:
            await self._ready_fn()

    def deliver(self, message: bytes) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(message)
        self._ready.set()

    def lost(self) -> None:
        """Messages may have been missed that never reached this buffer: count one."""
        self.dropped += 1

    def gap(self) -> None:
        """Wake the reader with an empty message where messages may be missing, so that it
        repairs the gap now (once it can) rather than at the next message."""
        self.deliver(GAP)

    def end(self) -> None:
        """Stop the iteration once the pending messages are read."""
        self._closed = True
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
        self.end()
        self._on_close(self)
