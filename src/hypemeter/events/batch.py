"""Validated events of one request, held as one Arrow table for a fast bulk write.

Built where events are decoded (possibly in a worker process) and shipped to
the store as Arrow IPC, which costs almost nothing to read back.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import msgspec
import numpy as np
import pyarrow as pa

from hypemeter.events.model import EventIn

_STR = pa.string()
TS_TYPE = pa.timestamp("us", tz="UTC")


def id_digest(name: str) -> bytes:
    """The MD5 of an event id or tenant id: 16 bytes."""
    return hashlib.md5(name.encode(), usedforsecurity=False).digest()


def fingerprint(tenant_id: str, event_id: str) -> bytes:
    """16 bytes identifying (tenant, event_id): MD5(event_id) XOR MD5(tenant).

    A batch carries MD5(event_id) and the store folds the tenant in, so a batch
    does not need to know whose it is. Making one tenant's id collide with
    another's would take an MD5 preimage.
    """
    a, b = id_digest(event_id), id_digest(tenant_id)
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Columns: event_id, has_id, fp_hi, fp_lo, influencer_id, platform, content_id,
    campaign_id, metric, kind, value, ts, user_id, text, tags, variant, properties.

    ``has_id`` is false for events the server named: those are never deduplicated.
    ``fp_hi``/``fp_lo`` are the little-endian words (bytes 8-15, 0-7) of MD5(event_id);
    the store folds the tenant in (see ``fingerprint``).

    A batch made in the server process may stay as its validated events
    (``rows``) until the store builds one table for a whole group of them:
    Arrow's fixed cost per column would dwarf a one-event request.
    """

    table: pa.Table | None = None
    rows: tuple[list[EventIn], list[int]] | None = None

    def __len__(self) -> int:
        if self.rows is not None:
            return len(self.rows[0])
        return int(self.arrow().num_rows)

    def arrow(self) -> pa.Table:
        if self.table is not None:
            return self.table
        assert self.rows is not None
        return _table(*self.rows)

    @classmethod
    def of_rows(cls, events: list[EventIn], ts_us: list[int]) -> EventBatch:
        return cls(rows=(events, ts_us))

    @classmethod
    def from_events(cls, events: list[EventIn], ts_us: list[int]) -> EventBatch:
        """Only validated events may be passed: their required fields are set."""
        return cls(table=_table(events, ts_us))

    @staticmethod
    def concat_rows(batches: list[EventBatch]) -> EventBatch:
        """One row-form batch holding the rows of several, in order."""
        events: list[EventIn] = []
        stamps: list[int] = []
        for batch in batches:
            assert batch.rows is not None
            events.extend(batch.rows[0])
            stamps.extend(batch.rows[1])
        return EventBatch.of_rows(events, stamps)

    def to_ipc(self) -> bytes:
        table = self.arrow()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return bytes(sink.getvalue())

    @classmethod
    def from_ipc(cls, data: bytes) -> EventBatch:
        return cls(table=pa.ipc.open_stream(data).read_all())


def tables_in_order(batches: list[EventBatch]) -> list[pa.Table]:
    """Arrow tables of the batches, in order; neighbouring row-form batches become one."""
    tables: list[pa.Table] = []
    pending: list[EventBatch] = []
    for batch in batches:
        if batch.rows is not None:
            pending.append(batch)
            continue
        if pending:
            tables.append(EventBatch.concat_rows(pending).arrow())
            pending = []
        tables.append(batch.arrow())
    if pending:
        tables.append(EventBatch.concat_rows(pending).arrow())
    return tables


def _table(events: list[EventIn], ts_us: list[int]) -> pa.Table:
    """The Arrow table of validated events (their required fields are set)."""
    n = len(events)
    ids = [e.event_id for e in events]
    has_id = [e is not None for e in ids]
    digests = [id_digest(e) for e in ids if e is not None]
    words = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
    hi = np.zeros(n, dtype=np.uint64)
    lo = np.zeros(n, dtype=np.uint64)
    present = np.asarray(has_id, dtype=np.bool_)
    if digests:
        hi[present] = words[:, 1]
        lo[present] = words[:, 0]
    if len(digests) < n:
        prefix = f"s{secrets.token_hex(12)}-"
        ids = [e if e is not None else f"{prefix}{i}" for i, e in enumerate(ids)]
    encode = msgspec.json.encode
    properties = [None if e.properties is None else encode(e.properties).decode() for e in events]
    return pa.table(
        {
            "event_id": pa.array(ids, _STR),
            "has_id": pa.array(present),
            "fp_hi": pa.array(hi, mask=~present),
            "fp_lo": pa.array(lo, mask=~present),
            "influencer_id": pa.array([e.influencer_id for e in events], _STR),
            "platform": pa.array([e.platform for e in events], _STR),
            "content_id": pa.array([e.content_id for e in events], _STR),
            "campaign_id": pa.array([e.campaign_id for e in events], _STR),
            "metric": pa.array([e.metric for e in events], _STR),
            "kind": pa.array([e.kind for e in events], _STR),
            "value": pa.array([e.value for e in events], pa.float64()),
            "ts": pa.array(ts_us, TS_TYPE),  # microseconds as they are: no cast pass
            "user_id": pa.array([e.user_id for e in events], _STR),
            "text": pa.array([e.text for e in events], _STR),
            "tags": pa.array([e.tags for e in events], pa.list_(_STR)),
            "variant": pa.array([e.variant for e in events], _STR),
            "properties": pa.array(properties, _STR),
        }
    )
