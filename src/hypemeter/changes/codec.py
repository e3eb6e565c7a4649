"""Change sets: the events of one commit, and their wire form between processes.

A change set holds the kept events of one commit (duplicates left out, snapshots
as their deltas). Between processes it travels as Arrow IPC with the tenant, the
commit's ``seq`` and time, and the announcing feed in the schema metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

COLUMNS = (
    "event_id",
    "influencer_id",
    "platform",
    "content_id",
    "campaign_id",
    "metric",
    "kind",
    "value",
    "delta",
    "ts",
    "user_id",
    "text",
    "tags",
)
ALL_TENANTS = "changes"


def topic(tenant_id: str | None) -> str:
    """The bus topic of one tenant's change sets, or of every tenant's."""
    return ALL_TENANTS if tenant_id is None else f"{ALL_TENANTS}.{tenant_id}"


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """The events one commit kept for one tenant, with the commit's seq and time."""

    tenant_id: str
    seq: int
    committed_us: int
    table: pa.Table


def encode(change: ChangeSet, origin: str) -> bytes:
    table = change.table.select(list(COLUMNS)).replace_schema_metadata(
        {
            "tenant": change.tenant_id,
            "seq": str(change.seq),
            "committed_us": str(change.committed_us),
            "origin": origin,
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def encode_rewrite(tenant_id: str, origin: str) -> bytes:
    """The notice that a tenant's stored events changed without a commit (an erasure, a
    purge): what its readers derived from change sets may be stale."""
    table = pa.table({"event_id": pa.array([], pa.string())}).replace_schema_metadata(
        {"tenant": tenant_id, "rewrite": "1", "origin": origin}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def decode(message: bytes) -> tuple[ChangeSet | None, str, str]:
    """A change set (None for a rewrite notice), its tenant and the feed that sent it."""
    with pa.ipc.open_stream(message) as reader:
        table = reader.read_all()
    meta = table.schema.metadata or {}
    tenant = meta[b"tenant"].decode()
    origin = meta.get(b"origin", b"").decode()
    if meta.get(b"rewrite") == b"1":
        return None, tenant, origin
    change = ChangeSet(tenant, int(meta[b"seq"]), int(meta[b"committed_us"]), table)
    return change, tenant, origin
