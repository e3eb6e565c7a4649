"""Ingest use cases: decode, validate, normalise, append durably, announce."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hypemeter.auth.model import NO_LIMITS, KeyLimits
from hypemeter.clock import Clock
from hypemeter.errors import BatchRejected, Conflict, InvalidInput, Rejection
from hypemeter.events.admission import Admission, Origin, admit
from hypemeter.events.batch import EventBatch
from hypemeter.events.codec import IngestLimits, media_type
from hypemeter.events.commit import EventSink
from hypemeter.events.model import (
    MAX_CUSTOM_METRICS,
    Directory,
    EventIn,
    MetricCatalog,
    MetricDefinition,
    MetricKind,
    ValidationRules,
    check_custom_metric_name,
)
from hypemeter.events.ports import CatalogStore
from hypemeter.events.preparation import (
    InlinePreparer,
    Prepared,
    PrepareJob,
    Preparer,
    retention_us,
    validate_all,
)
from hypemeter.events.value_limits import ValueLimits

EVENT_FIELDS = frozenset(EventIn.__struct_fields__)
INLINE_BODY_BYTES = 16 * 1024
HISTORY_MINUTES = 60
RECENT_REJECTIONS = 50
MINUTE_US = 60_000_000


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]


@dataclass(slots=True)
class IngestHistory:
    """One tenant's last hour of ingest, per minute, and its latest rejections."""

    minutes: deque[list[int]] = field(default_factory=lambda: deque(maxlen=HISTORY_MINUTES))
    rejections: deque[dict[str, object]] = field(
        default_factory=lambda: deque(maxlen=RECENT_REJECTIONS)
    )

    def minute(self, now_us: int) -> list[int]:
        start = now_us - now_us % MINUTE_US
        if not self.minutes or self.minutes[-1][0] < start:
            self.minutes.append([start, 0, 0, 0])
        return self.minutes[-1]

    def payload(self, now_us: int) -> dict[str, Any]:
        """Zero-filled minutes, oldest first, up to the current one; rejections newest first."""
        current = now_us - now_us % MINUTE_US
        counts = {m[0]: m[1:] for m in self.minutes}
        series = []
        for i in range(HISTORY_MINUTES - 1, -1, -1):
            start = current - i * MINUTE_US
            accepted, duplicates, rejected = counts.get(start, (0, 0, 0))
            series.append(
                {"ts": start, "accepted": accepted, "duplicates": duplicates, "rejected": rejected}
            )
        return {"minutes": series, "recent_rejections": list(reversed(self.rejections))}


@dataclass(slots=True)
class IngestStats:
    """Running totals for /metrics, per tenant, and each tenant's recent history; written
    on the event loop, read by scrapes and the ingestion health route."""

    now_us: Callable[[], int]
    accepted: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    history: dict[str, IngestHistory] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _history(self, tenant_id: str) -> IngestHistory:
        found = self.history.get(tenant_id)
        if found is None:
            found = self.history[tenant_id] = IngestHistory()
        return found

    def record(self, tenant_id: str, result: IngestResult) -> None:
        now = self.now_us()
        with self.lock:
            self.accepted[tenant_id] += result.accepted
            self.duplicates[tenant_id] += result.duplicates
            history = self._history(tenant_id)
            minute = history.minute(now)
            minute[1] += result.accepted
            minute[2] += result.duplicates
            minute[3] += len(result.rejected)
            for item in result.rejected:
                reason = item.field if item.field in EVENT_FIELDS else "event"
                self.rejected[(tenant_id, reason)] += 1
                history.rejections.append(
                    {
                        "at": now,
                        "scope": "event",
                        "index": item.index,
                        "field": item.field,
                        "error": item.error,
                    }
                )

    def refused(self, tenant_id: str, field_name: str | None, message: str) -> None:
        """A whole request refused (a body that could not be read, a limit passed)."""
        with self.lock:
            self._history(tenant_id).rejections.append(
                {
                    "at": self.now_us(),
                    "scope": "request",
                    "index": None,
                    "field": field_name,
                    "error": message,
                }
            )

    def health(self, tenant_id: str) -> dict[str, Any]:
        now = self.now_us()
        with self.lock:
            history = self.history.get(tenant_id) or IngestHistory()
            return history.payload(now)


EventQuota = Callable[[int], Awaitable[object]]


class IngestService:
    def __init__(
        self,
        sink: EventSink,
        tenants: CatalogStore,
        clock: Clock,
        limits: IngestLimits,
        preparer: Preparer | None = None,
        announce: Callable[[], Awaitable[None]] | None = None,
        directory: Callable[[str], Directory | None] | None = None,
    ) -> None:
        """``sink`` commits (``events.commit``) or appends to the event log.
        ``directory`` gives a tenant's registry (or None): events that name only a
        registered content or account get their influencer and campaign from it."""
        self._directory = directory
        self._sink = sink
        self._tenants = tenants
        self._clock = clock
        self._limits = limits
        self._inline: Preparer = InlinePreparer()
        self._preparer: Preparer = preparer or self._inline
        self._catalogs: dict[str, MetricCatalog] = {}
        self._announce = announce
        self.stats = IngestStats(clock.now_us)
        self.value_limits = ValueLimits(tenants, self._changed)

    async def start(self) -> None:
        """Start the preparer and load custom metrics; called once at start-up."""
        await self._preparer.start()
        await self.reload_metrics()

    async def reload_metrics(self) -> None:
        """Learn the custom metrics and value limits set in the store (by any process)."""
        for tenant_id, metric in await self._tenants.list_metrics():
            self.catalog(tenant_id).custom[metric.name] = metric.kind
        await self.value_limits.load()

    async def _changed(self) -> None:
        if self._announce is not None:
            await self._announce()

    def admission(
        self, tenant_id: str, *, limits: KeyLimits = NO_LIMITS, origin: Origin = Origin.KEY
    ) -> Admission:
        """What a writer of ``origin`` (with the limits of its key) may write."""
        if origin is Origin.IMPORT:
            return Admission.of(None, connector_ids=True)
        bounds = self.value_limits.bounds(tenant_id, self.catalog(tenant_id))
        return Admission.of(bounds, key=limits, connector_ids=origin is Origin.CONNECTOR)

    async def aclose(self) -> None:
        await self._preparer.aclose()

    def catalog(self, tenant_id: str) -> MetricCatalog:
        catalog = self._catalogs.get(tenant_id)
        if catalog is None:
            catalog = self._catalogs[tenant_id] = MetricCatalog()
        return catalog

    async def register_metric(self, tenant_id: str, name: str, kind: str) -> MetricDefinition:
        try:
            canon = check_custom_metric_name(name)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="name") from exc
        try:
            metric_kind = MetricKind(kind)
        except ValueError:
            raise InvalidInput("kind must be 'counter' or 'gauge'", field="kind") from None
        catalog = self.catalog(tenant_id)
        if len(catalog.custom) >= MAX_CUSTOM_METRICS:
            raise InvalidInput(
                f"a tenant may register at most {MAX_CUSTOM_METRICS} custom metrics", field="name"
            )
        definition = MetricDefinition(canon, metric_kind)
        if not await self._tenants.add_metric(tenant_id, definition):
            raise Conflict(f"metric {canon!r} is already registered", field="name")
        catalog.custom[canon] = metric_kind
        self.value_limits.forget(tenant_id)
        await self._changed()
        return definition

    async def ingest(
        self,
        tenant_id: str,
        body: bytes,
        *,
        content_type: str | None,
        content_encoding: str | None,
        quota: EventQuota,
        limits: KeyLimits = NO_LIMITS,
        origin: Origin = Origin.KEY,
    ) -> IngestResult:
        """Ingest a JSON array or NDJSON body written with a key of ``limits`` (or, by
        ``origin``, by an import).

        Raises InvalidInput (bad body), BatchRejected (no valid event),
        PayloadTooLarge, UnsupportedMediaType, RateLimited (from ``quota``),
        Overloaded and StoreUnavailable.
        """
        kind = media_type(content_type)
        admission = self.admission(tenant_id, limits=limits, origin=origin)
        job = self._job(tenant_id, body, admission, kind=kind, content_encoding=content_encoding)
        return await self._admit(tenant_id, await self._prepare(job), quota)

    async def track(
        self,
        tenant_id: str,
        metric: str,
        body: bytes,
        *,
        content_encoding: str | None,
        quota: EventQuota,
        limits: KeyLimits = NO_LIMITS,
    ) -> IngestResult:
        """Ingest one SDK event whose metric comes from the URL path."""
        job = self._job(
            tenant_id,
            body,
            self.admission(tenant_id, limits=limits),
            kind="json",
            content_encoding=content_encoding,
            track_metric=metric,
        )
        return await self._admit(tenant_id, await self._prepare(job), quota)

    async def ingest_events(self, tenant_id: str, events: list[EventIn]) -> IngestResult:
        """Validate and store events already in the schema (mapped from a platform's
        delivery): the registry names their influencers; invalid ones are rejected by
        index. Raises Overloaded and StoreUnavailable; never BatchRejected."""
        now_us = self._clock.now_us()
        rules = ValidationRules(
            now_us,
            self._limits.max_future_seconds * 1_000_000,
            retention_us(self._limits.retention_days),
        )
        directory = self._directory(tenant_id) if self._directory is not None else None
        rejected: list[Rejection] = []
        kept, stamps, indices = validate_all(
            enumerate(events), self.catalog(tenant_id), rules, directory, rejected
        )
        admission = self.admission(tenant_id, origin=Origin.CONNECTOR)
        kept, stamps = admit(kept, stamps, indices, admission, rejected)
        rejected.sort(key=lambda r: r.index)
        if not kept:
            result = IngestResult(0, 0, rejected)
            self.stats.record(tenant_id, result)
            return result
        return await self._append(tenant_id, EventBatch.of_rows(kept, stamps), rejected)

    async def _prepare(self, job: PrepareJob) -> Prepared:
        # A small body costs less to decode here than to ship to a worker and back.
        if len(job.body) <= INLINE_BODY_BYTES:
            return await self._inline.prepare(job)
        return await self._preparer.prepare(job)

    def _job(
        self,
        tenant_id: str,
        body: bytes,
        admission: Admission,
        *,
        kind: str,
        content_encoding: str | None,
        track_metric: str | None = None,
    ) -> PrepareJob:
        custom = self.catalog(tenant_id).custom
        return PrepareJob(
            tenant_id=tenant_id,
            body=body,
            kind=kind,
            content_encoding=content_encoding,
            limits=self._limits.body(),
            now_us=self._clock.now_us(),
            max_future_us=self._limits.max_future_seconds * 1_000_000,
            retention_us=retention_us(self._limits.retention_days),
            admission=admission,
            custom_metrics={name: k.value for name, k in custom.items()},
            track_metric=track_metric,
            directory=self._directory(tenant_id) if self._directory is not None else None,
        )

    async def _admit(self, tenant_id: str, prepared: Prepared, quota: EventQuota) -> IngestResult:
        prepared.raise_error()
        await quota(prepared.count)
        rejected = prepared.rejections()
        batch = prepared.batch()
        if batch is None:
            self.stats.record(tenant_id, IngestResult(0, 0, rejected))
            raise BatchRejected(rejected)
        return await self._append(tenant_id, batch, rejected)

    async def _append(
        self, tenant_id: str, batch: EventBatch, rejected: list[Rejection]
    ) -> IngestResult:
        """Store the valid events and count them."""
        appended = await self._sink.append(tenant_id, batch)
        result = IngestResult(appended.accepted, appended.duplicates, rejected)
        self.stats.record(tenant_id, result)
        return result
