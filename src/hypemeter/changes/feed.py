"""The change feed: committed change sets, announced once, followed at each reader's pace.

The commit step (``events.commit``) announces every commit here, and nothing else
does. Whatever reacts to committed events (the live hub, and each capability that
keeps state derived from events) subscribes, to one tenant or to all, and reads at
its own pace from its own buffer: delivery is a synchronous append, so a slow
reader never delays the acknowledgement or another reader. A reader that falls
more than its buffer behind loses the oldest change sets and reads a gap (None)
before the next one, where it repairs from the store.

With a bus between processes (the cluster profile: workers commit, API processes
serve), the feed also publishes each change set on the bus, and a feed with
readers relays the change sets other processes announced to them. A feed never
reads back what it published itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from hypemeter.changes.codec import ChangeSet, decode, encode, encode_rewrite, topic
from hypemeter.changes.ports import Bus, BusSubscription

log = logging.getLogger("hypemeter.changes")
RELAY_BACKLOG = 10_000


class ChangeSubscription:
    """One reader's change sets, oldest first, in a buffer of ``max_pending``.

    ``position`` is the seq of the last change set read; ``dropped`` counts the change
    sets lost to a full buffer (or to the bus between processes).
    """

    def __init__(
        self,
        tenant_id: str | None,
        max_pending: int,
        on_close: Callable[[ChangeSubscription], None],
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.position = 0
        self.dropped = 0
        self._pending: deque[ChangeSet] = deque(maxlen=max_pending)
        self._gap = False
        self._wake = asyncio.Event()
        self._closed = False
        self._on_close = on_close
        self._ready = ready

    def deliver(self, change: ChangeSet) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.lost()
        self._pending.append(change)
        self._wake.set()

    def lost(self) -> None:
        """Change sets were lost before the next one in the buffer: read a gap first."""
        self.dropped += 1
        self._gap = True
        self._wake.set()

    def end(self) -> None:
        self._closed = True
        self._wake.set()

    async def ready(self) -> None:
        """Until every change set announced from now on reaches this reader."""
        if self._ready is not None:
            await self._ready()

    def take(self) -> list[ChangeSet] | None:
        """Every change set delivered and not read yet, without waiting; None when a gap
        comes first (the reader repairs from the store). For a reader that must hold
        what was announced before it answers (read-your-writes)."""
        if self._gap:
            self._gap = False
            return None
        taken = list(self._pending)
        self._pending.clear()
        if taken:
            self.position = taken[-1].seq
        return taken

    def __aiter__(self) -> AsyncIterator[ChangeSet | None]:
        return self

    async def __anext__(self) -> ChangeSet | None:
        while not self._pending and not self._gap:
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        if self._gap:
            self._gap = False
            return None
        change = self._pending.popleft()
        self.position = change.seq
        return change

    async def aclose(self) -> None:
        self.end()
        self._on_close(self)


class ChangeFeed:
    """The one place committed change sets are announced, and where readers follow them.

    ``bus`` is the bus between processes, or None when every commit happens in this
    process (the embedded profile). Between processes every change set travels once,
    on one topic; a feed with readers holds one subscription to it and routes what it
    brings to its readers by tenant, as it routes its own announcements.
    """

    def __init__(self, bus: Bus | None = None) -> None:
        self._bus = bus
        self._origin = uuid.uuid4().hex
        self._readers: dict[str | None, set[ChangeSubscription]] = {}
        self._relay: BusSubscription | None = None
        self._carrier: asyncio.Task[None] | None = None
        self.announced = 0

    async def announce(self, change: ChangeSet) -> None:
        """Deliver a commit's change set to this process's readers, and to the bus."""
        self.announced += 1
        self._deliver(change)
        await self._publish(lambda: encode(change, self._origin))

    async def rewritten(self, tenant_id: str) -> None:
        """The tenant's stored events changed without a commit (an erasure, a purge):
        every reader of the tenant, in this process and the others, reads a gap and
        repairs what it derived from the store."""
        for sub in self._of(tenant_id):
            sub.lost()
        await self._publish(lambda: encode_rewrite(tenant_id, self._origin))

    def subscribe(
        self, tenant_id: str | None = None, *, max_pending: int = 1000
    ) -> ChangeSubscription:
        """Follow one tenant's change sets (every tenant's with None) from now on."""
        relay = self._relayed()
        sub = ChangeSubscription(
            tenant_id, max_pending, self._forget, ready=None if relay is None else relay.ready
        )
        self._readers.setdefault(tenant_id, set()).add(sub)
        return sub

    async def aclose(self) -> None:
        for subs in list(self._readers.values()):
            for sub in list(subs):
                await sub.aclose()
        await self._stop_relay()

    def _of(self, tenant_id: str) -> list[ChangeSubscription]:
        """The readers of one tenant: its own and those of every tenant."""
        return [*self._readers.get(tenant_id, ()), *self._readers.get(None, ())]

    def _deliver(self, change: ChangeSet) -> None:
        for sub in self._of(change.tenant_id):
            sub.deliver(change)

    async def _publish(self, message: Callable[[], bytes]) -> None:
        name = topic(None)
        if self._bus is None or not self._bus.interested(name):
            return
        try:
            await self._bus.publish(name, message())
        except Exception:  # readers elsewhere repair; the events are committed
            log.exception("could not publish on the change feed's topic")

    def _forget(self, sub: ChangeSubscription) -> None:
        subs = self._readers.get(sub.tenant_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._readers[sub.tenant_id]
        if not self._readers and self._relay is not None:
            detached = self._detach()  # a reader subscribing meanwhile makes a new one
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(_close(*detached))

    def _relayed(self) -> BusSubscription | None:
        """The subscription to the bus's change sets, made with the first reader."""
        if self._bus is None:
            return None
        if self._relay is None:
            self._relay = self._bus.subscribe(topic(None), max_pending=RELAY_BACKLOG)
            self._carrier = asyncio.create_task(
                self._carry(self._relay), name="hypemeter-changes-relay"
            )
        return self._relay

    async def _carry(self, relay: BusSubscription) -> None:
        dropped = relay.dropped
        async for message in relay:
            if relay.dropped != dropped:
                dropped = relay.dropped
                for subs in list(self._readers.values()):
                    for sub in list(subs):
                        sub.lost()
            if not message:  # a gap on the bus, counted above
                continue
            try:
                change, tenant_id, origin = decode(message)
            except Exception:
                log.exception("unreadable change set on the bus")
                continue
            if origin == self._origin:
                continue
            for sub in self._of(tenant_id):
                if change is None:
                    sub.lost()  # a rewrite elsewhere: repair from the store
                else:
                    sub.deliver(change)

    def _detach(self) -> tuple[BusSubscription | None, asyncio.Task[None] | None]:
        detached = self._relay, self._carrier
        self._relay = self._carrier = None
        return detached

    async def _stop_relay(self) -> None:
        await _close(*self._detach())


async def _close(relay: BusSubscription | None, carrier: asyncio.Task[None] | None) -> None:
    if carrier is not None:
        carrier.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await carrier
    if relay is not None:
        await relay.aclose()
