"""Turning a request body into a validated EventBatch: decode, validate, normalise.

This is the CPU-heavy half of ingest, so it can run in worker processes
(``ProcessPreparer``) and use the second core while the server process serves
HTTP and commits. ``prepare`` is a plain function of picklable data, and its
errors travel back as data, re-raised on the server side.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import signal
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from hypemeter.errors import (
    HypemeterError,
    InvalidInput,
    PayloadTooLarge,
    Rejection,
    UnsupportedMediaType,
)
from hypemeter.events.admission import Admission, admit
from hypemeter.events.batch import EventBatch
from hypemeter.events.codec import (
    BodyLimits,
    Decoders,
    Items,
    decode_items,
    decompress,
    split_items,
)
from hypemeter.events.model import (
    Directory,
    EventIn,
    EventInvalid,
    MetricCatalog,
    MetricKind,
    TrackIn,
    ValidationRules,
    from_epoch_us,
    validate_event,
)

_EVENT_DECODERS = Decoders.of(EventIn)
_TRACK_DECODERS = Decoders.of(TrackIn)


@dataclass(frozen=True, slots=True)
class PrepareJob:
    """Everything ``prepare`` needs, and nothing that cannot be pickled."""

    tenant_id: str
    body: bytes
    kind: str  # "json" or "ndjson"; ignored for track
    content_encoding: str | None
    limits: BodyLimits
    now_us: int
    max_future_us: int
    retention_us: int
    admission: Admission  # what this writer may write (key limits, value bounds, ids)
    custom_metrics: dict[str, str] = field(default_factory=dict)
    track_metric: str | None = None
    directory: Directory | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """The outcome: an Arrow IPC batch of the valid events and the rejections, or an error."""

    count: int = 0
    ipc: bytes | None = None
    local: EventBatch | None = None  # set instead of ipc when prepared in this process
    rejected: list[tuple[int, str | None, str]] = field(default_factory=list)
    error: tuple[str, str, str | None, str | None, int] | None = None

    def batch(self) -> EventBatch | None:
        if self.local is not None:
            return self.local
        return EventBatch.from_ipc(self.ipc) if self.ipc is not None else None

    def rejections(self) -> list[Rejection]:
        return [Rejection(i, f, e) for i, f, e in self.rejected]

    def raise_error(self) -> None:
        if self.error is None:
            return
        code, message, name, limit, value = self.error
        if code == PayloadTooLarge.code:
            raise PayloadTooLarge(message, limit=limit or "", value=value)
        if code == UnsupportedMediaType.code:
            raise UnsupportedMediaType(message, field=name)
        raise InvalidInput(message, field=name)


def prepare(job: PrepareJob, *, local: bool = False) -> Prepared:
    """Decode and validate one body; never raises for bad input.

    ``local`` keeps the valid events as they are, for the store of this process;
    otherwise they travel as Arrow IPC.
    """
    try:
        return _prepare(job, local=local)
    except HypemeterError as exc:
        limit = getattr(exc, "limit", None)
        value = int(getattr(exc, "value", 0))
        return Prepared(error=(exc.code, exc.message, exc.field, limit, value))


def _prepare(job: PrepareJob, *, local: bool) -> Prepared:
    if job.track_metric is None:
        data = decompress(job.body, job.content_encoding, max_bytes=job.limits.max_body_bytes)
        items = split_items(data, job.kind, job.limits)
        decoded, rejected = decode_items(items, _EVENT_DECODERS, job.limits.max_event_bytes)
    else:
        data = decompress(job.body, job.content_encoding, max_bytes=job.limits.max_event_bytes)
        if not data.strip():
            raise InvalidInput(
                "body must be a JSON object with at least influencer_id", field="body"
            )
        items = Items("object", data, [data], 1)
        tracked, rejected = decode_items(items, _TRACK_DECODERS, job.limits.max_event_bytes)
        now = from_epoch_us(job.now_us)
        decoded = [(i, ev.to_event(job.track_metric, now)) for i, ev in tracked]
    catalog = MetricCatalog({name: MetricKind(kind) for name, kind in job.custom_metrics.items()})
    rules = ValidationRules(job.now_us, job.max_future_us, job.retention_us)
    events, stamps, indices = validate_all(decoded, catalog, rules, job.directory, rejected)
    events, stamps = admit(events, stamps, indices, job.admission, rejected)
    rejected.sort(key=lambda r: r.index)
    reasons = [(r.index, r.field, r.error) for r in rejected]
    if not events:
        return Prepared(count=items.count, rejected=reasons)
    if local:
        return Prepared(
            count=items.count, local=EventBatch.of_rows(events, stamps), rejected=reasons
        )
    ipc = EventBatch.from_events(events, stamps).to_ipc()
    return Prepared(count=items.count, ipc=ipc, rejected=reasons)


def validate_all(
    decoded: Iterable[tuple[int, EventIn]],
    catalog: MetricCatalog,
    rules: ValidationRules,
    directory: Directory | None,
    rejected: list[Rejection],
) -> tuple[list[EventIn], list[int], list[int]]:
    """The valid events (normalised), their timestamps and their indices; each invalid
    one is added to ``rejected`` with its index."""
    events: list[EventIn] = []
    stamps: list[int] = []
    indices: list[int] = []
    for index, event in decoded:
        try:
            stamps.append(validate_event(event, catalog, rules, directory))
        except EventInvalid as exc:
            rejected.append(Rejection(index, exc.field, exc.message))
            continue
        events.append(event)
        indices.append(index)
    return events, stamps, indices


class Preparer(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def prepare(self, job: PrepareJob) -> Prepared: ...


class InlinePreparer:
    """Prepares on the event loop itself: no extra process (tests, tiny deployments)."""

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def prepare(self, job: PrepareJob) -> Prepared:
        return prepare(job, local=True)


def _warm() -> int:
    return 0


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessPreparer:
    """Prepares in a pool of worker processes, started with ``spawn`` (the server has threads)."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_ignore_interrupts,
        )
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _warm) for _ in range(self._workers))
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def prepare(self, job: PrepareJob) -> Prepared:
        assert self._pool is not None, "ProcessPreparer.start() was not awaited"
        return await asyncio.get_running_loop().run_in_executor(self._pool, prepare, job)


def retention_us(days: int) -> int:
    return int(dt.timedelta(days=days).total_seconds()) * 1_000_000
