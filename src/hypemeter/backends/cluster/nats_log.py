"""The durable event log of the cluster profile, on NATS JetStream.

Ingest publishes each request's events as Arrow IPC messages, one per
partition of (tenant, influencer), so one influencer's events stay in order;
it acknowledges the request once JetStream has persisted every message.
Workers consume each partition through its own durable pull consumer with one
message in flight at a time (order kept across any number of workers) and
acknowledge a message only after its PostgreSQL transaction commits.

Each message carries ``Nats-Msg-Id`` = tenant, partition and a digest of its
event ids: a retried request yields the same messages, which JetStream's
duplicate window drops. Exact deduplication, beyond that window and across
redeliveries, is the store's (every event carries an id by then: the server
names the events that came without one before publishing).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import nats
import numpy as np
import pyarrow as pa
from nats.aio.client import Client as NATSClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from hypemeter.backends.dsn import split_param
from hypemeter.errors import InvalidInput, StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.ports import LogEntry

log = logging.getLogger("hypemeter.log")
TENANT_HEADER = "Hypemeter-Tenant"
DEFAULT_STREAM = "HYPEMETER_EVENTS"
# Room left under the server's max_payload for headers and framing.
PAYLOAD_MARGIN = 0.85


@dataclass(frozen=True, slots=True)
class LogConfig:
    partitions: int = 16
    duplicate_window_seconds: float = 120.0
    ack_wait_seconds: float = 30.0
    publish_timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class Published:
    """What JetStream did with one request's events."""

    accepted: int
    duplicates: int
    seq: int  # the stream sequence of the last message


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message taken from a partition: its events, and how to settle it."""

    tenant_id: str
    batch: EventBatch
    message: Msg

    async def ack(self) -> None:
        await self.message.ack()

    async def retry(self, delay: float) -> None:
        await self.message.nak(delay=delay)

    async def drop(self) -> None:
        await self.message.term()


def partition_of(tenant_id: str, influencer_id: str, partitions: int) -> int:
    return zlib.crc32(f"{tenant_id}\0{influencer_id}".encode()) % partitions


class JetStreamLog:
    """Publishing to, and consuming from, the event stream."""

    def __init__(self, dsn: str, config: LogConfig) -> None:
        servers, stream = split_param(dsn, "stream")
        self.stream = stream or DEFAULT_STREAM
        if not self.stream.replace("_", "").replace("-", "").isalnum():
            raise InvalidInput(
                f"the log DSN's stream {self.stream!r} must be letters, digits, _ and -",
                field="log",
            )
        self.servers = servers
        self.subject_prefix = f"hm.{self.stream.lower()}"
        self._config = config
        self._nc: NATSClient | None = None
        self._js: JetStreamContext | None = None

    @property
    def partitions(self) -> int:
        return self._config.partitions

    def subject(self, partition: int) -> str:
        return f"{self.subject_prefix}.p{partition}"

    async def start(self) -> None:
        try:
            self._nc = await nats.connect(
                self.servers,
                name="hypemeter",
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise StoreUnavailable(f"cannot reach the event log at {self.servers}: {exc}") from exc
        self._js = self._nc.jetstream(timeout=self._config.publish_timeout_seconds)
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        js = self._jetstream()
        config = js_api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.subject_prefix}.>"],
            storage=js_api.StorageType.FILE,
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=self._config.duplicate_window_seconds,
        )
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            try:
                await js.add_stream(config)
                return
            except nats.js.errors.BadRequestError:
                pass  # another process created it meanwhile
        await js.update_stream(config)

    async def aclose(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None
            self._js = None

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise StoreUnavailable("the event log is closed")
        return self._js

    async def check(self) -> None:
        """Raise StoreUnavailable unless the stream answers now."""
        try:
            await self._jetstream().stream_info(self.stream)
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreUnavailable(f"the event log does not answer: {exc}") from exc

    async def publish(self, tenant_id: str, batch: EventBatch) -> Published:
        """Persist a request's events in the stream; returns once JetStream has them all."""
        js = self._jetstream()
        size = len(batch)
        try:
            chunks = self._chunks(tenant_id, batch)
            acks = await asyncio.gather(
                *(
                    js.publish(
                        self.subject(partition),
                        payload,
                        headers={"Nats-Msg-Id": msg_id, TENANT_HEADER: tenant_id},
                    )
                    for partition, payload, msg_id, _ in chunks
                )
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreUnavailable(f"the event log did not persist the events: {exc}") from exc
        duplicates = sum(n for (_, _, _, n), ack in zip(chunks, acks, strict=True) if ack.duplicate)
        return Published(size - duplicates, duplicates, max((a.seq for a in acks), default=0))

    async def append(self, tenant_id: str, batch: EventBatch) -> int:
        """The ``EventLog`` port's append: ``publish``, and the stream sequence it reached."""
        return (await self.publish(tenant_id, batch)).seq

    async def read(self, after_seq: int, *, limit: int = 1000) -> list[LogEntry]:
        """The messages the stream holds after ``after_seq`` (those no worker has committed
        yet: the work queue drops a message once a worker acknowledges it)."""
        js = self._jetstream()
        entries: list[LogEntry] = []
        seq = after_seq + 1
        while len(entries) < limit:
            try:
                message = await js.get_msg(
                    self.stream, seq=seq, subject=f"{self.subject_prefix}.>", next=True
                )
            except NotFoundError:
                break
            except (TimeoutError, nats.errors.Error) as exc:
                raise StoreUnavailable(f"cannot read the event log: {exc}") from exc
            assert message.seq is not None
            seq = message.seq + 1
            tenant = (message.headers or {}).get(TENANT_HEADER)
            if tenant is None or message.data is None:
                continue  # not an entry of ours: the consumer drops such messages too
            table = EventBatch.from_ipc(message.data).arrow()
            tenants = pa.array([tenant] * table.num_rows, pa.string())
            logged_us = int(message.time.timestamp() * 1_000_000) if message.time else 0
            entries.append(
                LogEntry(message.seq, logged_us, table.add_column(0, "tenant_id", tenants))
            )
        return entries

    def _chunks(self, tenant_id: str, batch: EventBatch) -> list[tuple[int, bytes, str, int]]:
        """(partition, Arrow IPC, message id, events) per message of one request."""
        table = _named(batch.arrow())
        influencers = table.column("influencer_id").to_pylist()
        parts = np.array(
            [partition_of(tenant_id, i, self.partitions) for i in influencers], dtype=np.int64
        )
        assert self._nc is not None
        limit = int(self._nc.max_payload * PAYLOAD_MARGIN)
        out: list[tuple[int, bytes, str, int]] = []
        for partition in np.unique(parts).tolist():
            rows = table.take(pa.array(np.flatnonzero(parts == partition)))
            for piece in _split(rows, limit):
                ids = "\n".join(piece.table.column("event_id").to_pylist())
                digest = hashlib.sha256(ids.encode()).hexdigest()[:32]
                out.append(
                    (partition, piece.payload, f"{tenant_id}:{partition}:{digest}", piece.rows)
                )
        return out

    async def consume(
        self,
        partition: int,
        handle: Callable[[Delivery], Awaitable[None]],
        stopping: asyncio.Event,
        *,
        fetch_timeout: float = 1.0,
    ) -> None:
        """Hand each message of one partition to ``handle`` in order until ``stopping``.

        ``handle`` settles the message (ack, retry or drop) before the next one
        is delivered: the consumer admits one unacknowledged message.
        """
        js = self._jetstream()
        durable = f"{self.stream}-p{partition}"
        config = js_api.ConsumerConfig(
            durable_name=durable,
            filter_subject=self.subject(partition),
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=self._config.ack_wait_seconds,
            max_ack_pending=1,
        )
        subscription = await js.pull_subscribe(
            self.subject(partition), durable=durable, stream=self.stream, config=config
        )
        try:
            async for message in _messages(subscription, stopping, fetch_timeout):
                tenant = (message.headers or {}).get(TENANT_HEADER)
                try:
                    batch = EventBatch.from_ipc(message.data)
                except (pa.ArrowInvalid, OSError) as exc:
                    tenant = None
                    log.error("dropping an unreadable log message", extra={"error": str(exc)})
                if tenant is None:
                    await message.term()
                    continue
                await handle(Delivery(tenant, batch, message))
        finally:
            await subscription.unsubscribe()


async def _messages(
    subscription: JetStreamContext.PullSubscription, stopping: asyncio.Event, wait: float
) -> AsyncIterator[Msg]:
    while not stopping.is_set():
        try:
            messages = await subscription.fetch(1, timeout=wait)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        except nats.errors.Error as exc:
            log.warning("fetching from the event log failed", extra={"error": str(exc)})
            await asyncio.sleep(wait)
            continue
        for message in messages:
            yield message


@dataclass(frozen=True, slots=True)
class _Piece:
    table: pa.Table
    payload: bytes
    rows: int


def _split(table: pa.Table, limit: int) -> list[_Piece]:
    """Arrow IPC messages of at most ``limit`` bytes holding the rows in order."""
    payload = EventBatch(table=table).to_ipc()
    if len(payload) <= limit or table.num_rows <= 1:
        if len(payload) > limit:
            raise InvalidInput(
                f"an event is larger than the event log's message limit ({limit} bytes)",
                field="events",
            )
        return [_Piece(table, payload, table.num_rows)]
    half = table.num_rows // 2
    return _split(table.slice(0, half), limit) + _split(table.slice(half), limit)


def _named(table: pa.Table) -> pa.Table:
    """Every event marked as carrying an id: the server named those that had none, and
    redeliveries must find them in the store's id index like any other."""
    at = table.schema.get_field_index("has_id")
    return table.set_column(at, "has_id", pa.array(np.ones(table.num_rows, dtype=np.bool_)))
