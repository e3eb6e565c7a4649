"""Live bus over Redis pub/sub (``redis://``, ``rediss://``): fan-out between API processes.

A process holds one pub/sub connection, named ``client_name``, and one reader task
that hands each message to the local subscriptions of its topic; the Redis channel
``channel_prefix + topic`` is subscribed while the topic has a local subscriber (the
prefix names the DSN's database: pub/sub itself ignores databases). ``publish`` hands
a message to this process's own subscribers at once, as the memory bus does, then
sends it through a separate command connection to the other processes, one message
at a time in call order; each message carries its bus's origin id so that the reader
skips what came from itself.
Per publisher, every subscriber sees the messages of a topic in the order published.

Pub/sub is at-most-once. A subscription's ``ready`` waits until Redis confirmed its
channel, so that what is published after that reaches it; it reports what it may have
missed by raising ``dropped``:

- by one for each message its full buffer lost, as on the memory bus;
- by one when the connection to Redis is lost: the reader reconnects with redis-py's
  exponential backoff with jitter and subscribes again to every topic that still has
  local subscribers; what was published meanwhile is gone, and once Redis confirmed the
  channel again the subscription receives an empty message (the gap) so that its
  reader repairs what it missed then, not at the next message;
- by one when Redis does not confirm a subscription within ``READY_WAIT_S``.

Publishers cannot know of subscribers in other processes without asking Redis, so
``interested`` is always true and every message is sent; Redis drops the messages of
channels nobody subscribed to.

Driver errors stay in this adapter: a bus that cannot reach Redis at ``start`` raises
StoreUnavailable naming the DSN; a publish that fails is logged, counted in ``unsent``
and lost, and sending pauses for a second so that an outage does not slow ingest.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from contextlib import suppress
from typing import Any
from urllib.parse import urlparse

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff, ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError

from hypemeter.backends.dsn import redacted
from hypemeter.backends.subscription import BufferedSubscription
from hypemeter.errors import StoreUnavailable

log = logging.getLogger("hypemeter.bus")

CHANNEL_PREFIX = "hypemeter:live:"
ORIGIN_BYTES = 8
CONNECT_TIMEOUT_S = 2.0
PUBLISH_PAUSE_S = 1.0
READY_WAIT_S = 5.0  # a subscription waits this long at most for its confirmation
DRIVER_ERRORS = (RedisError, OSError)


class RedisLiveBus:
    """The ``LiveBus`` of the cluster profile."""

    def __init__(
        self,
        dsn: str,
        *,
        channel_prefix: str | None = None,
        client_name: str | None = None,
        backoff: AbstractBackoff | None = None,
    ) -> None:
        self._dsn = dsn
        self._prefix = channel_prefix or channel_prefix_of(dsn)
        self.client_name = client_name or f"hypemeter-live-{os.getpid()}-{secrets.token_hex(4)}"
        self._origin = secrets.token_bytes(ORIGIN_BYTES)
        self._backoff = backoff or ExponentialWithJitterBackoff(cap=5.0, base=0.05)
        self._client: Redis = Redis.from_url(
            dsn,
            client_name=f"{self.client_name}-publish",
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.01), 1),
        )
        self._conn: AbstractConnection | None = None  # the pub/sub connection, when up
        self._topics: dict[str, set[BufferedSubscription]] = {}
        self._requested: set[str] = set()  # topics SUBSCRIBEd on the current connection
        self._inflight: dict[str, int] = {}  # (UN)SUBSCRIBEs awaiting their confirmation
        # Set once Redis confirmed the channel of a topic on the current connection.
        self._subscribed: dict[str, asyncio.Event] = {}
        # Topics whose subscribers missed messages; told (``gap``) once subscribed again.
        self._gaps: set[str] = set()
        self._wake = asyncio.Event()
        self._publish_lock = asyncio.Lock()
        self._paused_until = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.unsent = 0  # messages that a failed or paused send kept from other processes

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; raises StoreUnavailable naming the DSN when Redis cannot be reached."""
        try:
            await self._client.ping()
            await self._connect()
        except DRIVER_ERRORS as exc:
            await self._client.aclose()
            raise StoreUnavailable(
                f"live bus {redacted(self._dsn)} is unreachable: {exc}", field="bus"
            ) from exc
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="hypemeter-bus-reader"),
            asyncio.create_task(self._sync_forever(), name="hypemeter-bus-sync"),
        ]

    async def aclose(self) -> None:
        """End every local subscription's iteration and close both connections."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            await _stop(task)
        for subs in self._topics.values():
            for sub in subs:
                sub.end()
        self._topics.clear()
        await self._disconnect()
        await self._client.aclose()

    # -- the port ------------------------------------------------------------------------

    async def publish(self, topic: str, message: bytes) -> None:
        """Deliver to this process's subscribers, then send to the other processes';
        never raises a driver error."""
        if self._closed:
            return
        for sub in self._topics.get(topic, ()):
            sub.deliver(message)
        async with self._publish_lock:
            if time.monotonic() < self._paused_until:  # checked once it is our turn
                self.unsent += 1
                return
            try:
                await self._client.publish(self._prefix + topic, self._origin + message)
            except DRIVER_ERRORS as exc:
                self.unsent += 1
                self._paused_until = time.monotonic() + PUBLISH_PAUSE_S
                log.warning("live message to %r not sent to other processes: %s", topic, exc)

    async def check(self) -> None:
        try:
            await self._client.ping()
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"the live bus does not answer: {exc}", field="bus") from exc

    def interested(self, topic: str) -> bool:
        """Always: a subscriber in another process cannot be ruled out from here."""
        del topic
        return True

    def subscribe(self, topic: str, *, max_pending: int = 1000) -> BufferedSubscription:
        sub = BufferedSubscription(
            topic, max_pending, self._forget, ready=lambda: self._wait_subscribed(topic)
        )
        if self._closed:
            sub.end()
            return sub
        subs = self._topics.setdefault(topic, set())
        if not subs:
            self._wake.set()
        subs.add(sub)
        return sub

    def _forget(self, sub: BufferedSubscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._topics[sub.topic]
            self._subscribed.pop(sub.topic, None)
            self._gaps.discard(sub.topic)
            self._wake.set()

    async def _wait_subscribed(self, topic: str) -> None:
        """Until Redis confirmed the topic's channel; past READY_WAIT_S a gap is possible,
        and counted as a drop."""
        event = self._subscribed.setdefault(topic, asyncio.Event())
        try:
            async with asyncio.timeout(READY_WAIT_S):
                await event.wait()
        except TimeoutError:
            for sub in self._topics.get(topic, ()):
                sub.lost()
            self._gaps.add(topic)

    # -- the pub/sub connection ------------------------------------------------------------

    async def _connect(self) -> None:
        pool = self._client.connection_pool
        kwargs: dict[str, Any] = {
            **pool.connection_kwargs,
            "client_name": self.client_name,
            "retry": Retry(NoBackoff(), 0),  # reconnecting is the reader's business
        }
        conn = pool.connection_class(**kwargs)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
        except BaseException:  # cancelled too: leave no half-open socket behind
            with suppress(*DRIVER_ERRORS):
                await conn.disconnect(nowait=True)
            raise
        self._conn = conn
        self._requested.clear()
        self._inflight.clear()
        try:
            await self._sync(conn)
        except DRIVER_ERRORS:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(*DRIVER_ERRORS):
                await conn.disconnect(nowait=True)

    async def _read_forever(self) -> None:
        """The reader: dispatch until the connection fails, then reconnect."""
        while True:
            conn = self._conn
            if conn is not None:
                try:
                    while True:
                        reply = await conn.read_response(timeout=math.inf, push_request=True)
                        self._dispatch(reply)
                except DRIVER_ERRORS as exc:
                    log.warning("live bus lost its Redis connection (%s); reconnecting", exc)
                    await self._disconnect()
                    self._lost()
            await self._reconnect()

    async def _reconnect(self) -> None:
        self._backoff.reset()  # type: ignore[no-untyped-call]
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(self._backoff.compute(failures))
            try:
                await self._connect()
            except DRIVER_ERRORS as exc:
                log.debug("live bus reconnect %d failed: %s", failures, exc)
            else:
                log.info("live bus reconnected to Redis after %d attempts", failures)
                return

    def _lost(self) -> None:
        """Every local subscription may have missed messages: tell each once."""
        self._requested.clear()
        self._inflight.clear()
        for event in self._subscribed.values():
            event.clear()
        self._gaps.update(self._topics)
        for subs in self._topics.values():
            for sub in subs:
                sub.lost()

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) != 3:
            return  # a PONG, or anything else a subscribed connection may say
        kind, channel, data = reply
        if kind == b"message":
            if not data.startswith(self._origin):  # our own were delivered at publish
                message = data[ORIGIN_BYTES:]
                for sub in self._topics.get(self._topic_of(channel), ()):
                    sub.deliver(message)
        elif kind in (b"subscribe", b"unsubscribe"):
            self._confirmed(self._topic_of(channel))

    def _confirmed(self, topic: str) -> None:
        left = self._inflight.get(topic, 0) - 1
        if left > 0:
            self._inflight[topic] = left
            return
        self._inflight.pop(topic, None)
        if topic in self._requested and topic in self._topics:
            self._subscribed.setdefault(topic, asyncio.Event()).set()
            if topic in self._gaps:
                # Subscribed again: from now on nothing is missed, so repairs can start.
                self._gaps.discard(topic)
                for sub in self._topics[topic]:
                    sub.gap()

    async def _sync_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            conn = self._conn
            if conn is not None:
                # The reader sees a failure too. A connection closed under a command (at
                # shutdown, or by the reader) makes redis-py raise AttributeError.
                with suppress(*DRIVER_ERRORS, AttributeError):
                    await self._sync(conn)

    async def _sync(self, conn: AbstractConnection) -> None:
        """Subscribe the channels of topics with local subscribers, unsubscribe the rest."""
        wanted = set(self._topics)
        add = sorted(wanted - self._requested)
        drop = sorted(self._requested - wanted)
        for topic in (*add, *drop):
            self._inflight[topic] = self._inflight.get(topic, 0) + 1
        self._requested.update(add)
        self._requested.difference_update(drop)
        if add:
            await conn.send_command("SUBSCRIBE", *(self._prefix + t for t in add))
        if drop:
            await conn.send_command("UNSUBSCRIBE", *(self._prefix + t for t in drop))

    def _topic_of(self, channel: bytes) -> str:
        return channel[len(self._prefix) :].decode()


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel until done: on Python 3.11 redis-py's ``wait_for`` may swallow a cancel."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        log.error("live bus task %s failed", task.get_name(), exc_info=task.exception())


def channel_prefix_of(dsn: str) -> str:
    """Channels of one deployment: pub/sub ignores Redis databases, so the prefix names
    the database of the DSN (deployments on ``/0`` and ``/1`` stay apart)."""
    database = urlparse(dsn).path.strip("/") or "0"
    return f"{CHANNEL_PREFIX}{database}:"
