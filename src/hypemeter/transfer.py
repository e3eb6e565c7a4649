"""Moving a tenant's raw events between deployments: ``hypemeter export`` and ``import``.

An export is NDJSON in the wire format of ``POST /v1/events``, one event per
line, in the order the events were stored, each with its event id (the server
named the events that came without one). Importing it goes through the same
validation as ingest and keeps the ids, so importing a file twice stores its
events once. Snapshots are exported as the readings sent, so the target store
derives the same deltas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

from hypemeter.auth.audit import Action
from hypemeter.auth.audit_log import AuditLog
from hypemeter.auth.model import Tenant
from hypemeter.backends.selection import Backends, open_backends
from hypemeter.changes.feed import ChangeFeed
from hypemeter.clock import SystemClock
from hypemeter.errors import BatchRejected, InvalidInput, Rejection
from hypemeter.events.admission import Origin
from hypemeter.events.commit import CommitStep
from hypemeter.events.service import IngestService
from hypemeter.metrics.model import format_instant
from hypemeter.settings import Settings

Progress = Callable[[int, int], None]
MAX_REPORTED_REJECTIONS = 20
_encode = msgspec.json.Encoder().encode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


async def export_events(
    settings: Settings, tenant_id: str, out: IO[bytes], progress: Progress
) -> int:
    """Write one tenant's events as NDJSON to ``out``; returns how many."""
    backends = open_backends(settings, SystemClock(), admin_only=True)
    store = backends.store
    await store.start()
    try:
        if tenant_id not in {t.tenant_id for t in await backends.tenants.list_tenants()}:
            raise InvalidInput(f"no tenant named {tenant_id!r}", field="tenant")
        # Recorded before the first line leaves: an interrupted export still shows.
        await _audited(settings, backends, tenant_id, "events.export")
        total = await store.count_events(tenant_id)
        done = 0
        progress(0, total)
        async for chunk in store.export(tenant_id):
            lines = [_line(row) for row in chunk.to_pylist()]
            out.write(b"".join(lines))
            done += len(lines)
            progress(done, total)
        return done
    finally:
        await store.aclose()


def _line(row: dict[str, Any]) -> bytes:
    event = {k: v for k, v in row.items() if v is not None and k != "ts_us"}
    event["ts"] = format_instant(int(row["ts_us"]))
    if "properties" in event:
        event["properties"] = _decode_object(event["properties"])
    return _encode(event) + b"\n"


@dataclass(slots=True)
class ImportResult:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    # The first rejections, with their line numbers (1-based) in the file.
    examples: list[Rejection] = field(default_factory=list)


async def import_events(
    settings: Settings, tenant_id: str, source: IO[bytes], size: int, progress: Progress
) -> ImportResult:
    """Ingest an NDJSON file into a tenant (created if missing), straight into the store.

    ``size`` is the file's length in bytes, for ``progress(bytes read, size)``.
    """
    clock = SystemClock()
    backends = open_backends(settings, clock, direct=True)
    ingest = IngestService(
        # Imported history is committed here, and announced to nobody: no one follows
        # this process's change feed.
        CommitStep(backends.store, ChangeFeed()),
        backends.tenants,
        clock,
        settings.ingest_limits(),
    )
    await backends.store.start()
    await backends.tenants.start()
    try:
        await backends.tenants.create_tenant(Tenant(tenant_id, clock.now_us()))
        await _audited(settings, backends, tenant_id, "events.import")
        await ingest.start()
        result = ImportResult()
        read = 0
        progress(0, size)
        for first_line, body in _bodies(source, settings):
            result.lines += body.count(b"\n")
            try:
                done = await ingest.ingest(
                    tenant_id,
                    body,
                    content_type="application/x-ndjson",
                    content_encoding=None,
                    quota=_no_quota,
                    # The file replays events a deployment accepted: connector ids
                    # included, whatever the value bounds of this one.
                    origin=Origin.IMPORT,
                )
            except BatchRejected as exc:
                _rejected(result, exc.rejected, first_line)
            else:
                result.accepted += done.accepted
                result.duplicates += done.duplicates
                _rejected(result, done.rejected, first_line)
            read += len(body)
            progress(read, size)
        return result
    finally:
        await ingest.aclose()
        await backends.tenants.aclose()
        await backends.store.aclose()


async def _audited(settings: Settings, backends: Backends, tenant_id: str, action: str) -> None:
    """Record a command-line export or import of a tenant's events in its audit log."""
    audit = AuditLog(backends.audit, SystemClock(), retention_days=settings.audit_retention_days)
    await audit.start(purge=False)
    try:
        await audit.record_local(tenant_id, Action(action, "tenant", tenant_id))
    finally:
        await audit.aclose()


async def _no_quota(_: int) -> None:
    return None


def _rejected(result: ImportResult, rejected: list[Rejection], first_line: int) -> None:
    result.rejected += len(rejected)
    room = MAX_REPORTED_REJECTIONS - len(result.examples)
    result.examples += [Rejection(r.index + first_line, r.field, r.error) for r in rejected[:room]]


def _bodies(source: IO[bytes], settings: Settings) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, body) of NDJSON requests no larger than ingest admits."""
    lines: list[bytes] = []
    size = 0
    first = number = 1
    for raw in source:
        line = raw if raw.endswith(b"\n") else raw + b"\n"
        full = len(lines) >= settings.max_events_per_request
        if lines and (full or size + len(line) > settings.max_body_bytes):
            yield first, b"".join(lines)
            lines, size, first = [], 0, number
        lines.append(line)
        size += len(line)
        number += 1
    if lines:
        yield first, b"".join(lines)
