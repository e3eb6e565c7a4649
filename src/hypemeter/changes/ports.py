"""What the change feed needs of the bus between processes (``live.ports.LiveBus`` is one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class BusSubscription(Protocol):
    """Messages of one topic; an empty one marks a gap, and ``dropped`` counts losses."""

    dropped: int

    async def ready(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Bus(Protocol):
    async def publish(self, topic: str, message: bytes) -> None: ...

    def interested(self, topic: str) -> bool: ...

    def subscribe(self, topic: str, *, max_pending: int = 1000) -> BusSubscription: ...
