"""The port live push fans out through: a bus of topics between processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class Subscription(Protocol):
    """Messages published on one topic since subscribing, in order.

    Messages are never empty: an empty one marks a gap (the bus lost its connection,
    say), where messages may be missing; ``dropped`` counts gaps and lost messages.
    """

    # Messages lost because the subscriber fell more than ``max_pending`` behind.
    dropped: int

    async def ready(self) -> None:
        """Return once every message published from now on will be delivered here
        (a remote bus waits for its broker's confirmation)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class LiveBus(Protocol):
    """Fan-out of live messages between producers (ingest) and consumers (push)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def publish(self, topic: str, message: bytes) -> None:
        """Deliver to current subscribers of ``topic``; never blocks on a slow one."""

    def interested(self, topic: str) -> bool:
        """Whether a publish on ``topic`` may reach anyone (producers skip costly work if
        not); true whenever the topic has a subscriber."""

    async def check(self) -> None:
        """Raise StoreUnavailable unless the bus can deliver now."""

    def subscribe(self, topic: str, *, max_pending: int = 1000) -> Subscription:
        """Subscribe; a subscriber more than ``max_pending`` behind loses the oldest."""
