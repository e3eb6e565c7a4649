"""Change sets: the events of one commit, as live push receives them over the bus.

A change set is Arrow IPC of the kept events (duplicates left out, snapshots
as their deltas) with the commit's ``seq`` and time in the schema metadata. It
is built only when somebody listens (``LiveBus.interested``).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pyarrow as pa

from hypemeter.events.ports import AppendResult
from hypemeter.live.ports import LiveBus

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


def topic(tenant_id: str) -> str:
    return f"changes.{tenant_id}"


@dataclass(frozen=True, slots=True)
class ChangeSet:
    seq: int
    committed_us: int
    table: pa.Table


def encode(changes: pa.Table, seq: int, committed_us: int) -> bytes:
    table = changes.select(list(COLUMNS)).replace_schema_metadata(
        {"seq": str(seq), "committed_us": str(committed_us)}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def decode(message: bytes) -> ChangeSet:
    with pa.ipc.open_stream(message) as reader:
        table = reader.read_all()
    meta = table.schema.metadata or {}
    return ChangeSet(int(meta[b"seq"]), int(meta[b"committed_us"]), table)


async def announce(bus: LiveBus, tenant_id: str, appended: AppendResult) -> None:
    """Tell the bus about a commit: a notice, and its change set when someone listens."""
    if not appended.accepted:
        return
    notice = msgspec.json.encode(
        {"tenant_id": tenant_id, "seq": appended.seq, "accepted": appended.accepted}
    )
    await bus.publish(f"ingested.{tenant_id}", notice)
    changed = topic(tenant_id)
    if appended.changes is not None and bus.interested(changed):
        await bus.publish(changed, encode(appended.changes, appended.seq, appended.committed_us))
