"""A tenant's change sets routed to the channels and tails that follow them.

Targets register under the primary field they follow (``content_id``,
``campaign_id``, ``influencer_id``, or the whole tenant) and one of its values;
each change set is split by those fields, and each target gets the rows of its
value, one call per commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.changes.codec import ChangeSet
from hypemeter.changes.feed import ChangeSubscription
from hypemeter.live.model import WHOLE_TENANT, LiveFilter, iso
from hypemeter.metrics.model import plain_number as plain

ROW_FIELDS = ("influencer_id", "platform", "content_id", "campaign_id", "metric", "kind")


class Tap(Protocol):
    """Raw events of one influencer or content item (moderation views)."""

    def events(self, rows: list[dict[str, Any]]) -> None: ...


class Target(Protocol):
    def take(self, rows: list[dict[str, Any]], seq: int, committed_us: int) -> None: ...


@dataclass(eq=False, slots=True)
class TailTarget:
    filter: LiveFilter
    tap: Tap
    metrics: frozenset[str] | None = None  # the metrics whose events it may send; None: any

    @property
    def route(self) -> tuple[str, str]:
        """The field and value a tail is routed by: its content item, else its influencer."""
        live_filter = self.filter
        name = "content_id" if live_filter.content_id is not None else "influencer_id"
        return name, getattr(live_filter, name)

    def take(self, rows: list[dict[str, Any]], seq: int, committed_us: int) -> None:
        metrics = self.metrics
        picked = [
            event_message(row)
            for row in rows
            if self.filter.matches(row) and (metrics is None or row["metric"] in metrics)
        ]
        if picked:
            self.tap.events(picked)


def event_message(row: dict[str, Any]) -> dict[str, Any]:
    """A raw event as a tail sends it."""
    return {
        "event_id": row["event_id"],
        **{name: row[name] for name in ROW_FIELDS},
        "value": plain(row["value"]),
        "delta": plain(row["delta"]),
        "ts": iso(row["ts"]),
        "user_id": row["user_id"],
        "text": row["text"],
        "tags": row["tags"] or [],
    }


@dataclass(slots=True)
class Feed:
    """A tenant's change sets, from the change feed, routed by primary field to targets."""

    subscription: ChangeSubscription
    routes: dict[str, dict[str, set[Target]]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    dropped: int = 0

    def add(self, name: str, value: str, target: Target) -> None:
        self.routes.setdefault(name, {}).setdefault(value, set()).add(target)

    def remove(self, name: str, value: str, target: Target) -> None:
        by_value = self.routes.get(name, {})
        targets = by_value.get(value)
        if targets is not None:
            targets.discard(target)
            if not targets:
                del by_value[value]
        if not by_value:
            self.routes.pop(name, None)

    def targets(self) -> Iterable[Target]:
        for by_value in self.routes.values():
            for targets in by_value.values():
                yield from targets

    def route(self, change: ChangeSet) -> None:
        """Hand each target the rows of ``change`` its route matches."""
        table = change.table
        if not table.num_rows:
            return
        table = table.set_column(
            table.schema.get_field_index("ts"), "ts", pc.cast(table.column("ts"), pa.int64())
        )
        for name, by_value in list(self.routes.items()):
            if not by_value:
                continue
            if name == WHOLE_TENANT[0]:
                rows = table.to_pylist()
                for target in list(by_value.get(WHOLE_TENANT[1], ())):
                    target.take(rows, change.seq, change.committed_us)
                continue
            column = table.column(name)
            hit = pc.fill_null(
                pc.is_in(column, value_set=pa.array(list(by_value), pa.string())), False
            )
            picked = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
            if not len(picked):
                continue
            groups: dict[str, list[dict[str, Any]]] = {}
            for row in table.take(pa.array(picked)).to_pylist():
                groups.setdefault(row[name], []).append(row)
            for value, rows in groups.items():
                for target in list(by_value.get(value, ())):
                    target.take(rows, change.seq, change.committed_us)
