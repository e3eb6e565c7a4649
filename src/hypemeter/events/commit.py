"""The commit step: the one place where a committed batch is announced.

Ingest in one process (the embedded profile) and the workers of the cluster
profile both commit through it: the store deduplicates, derives snapshot deltas
and commits; the step then announces the commit's change set on the change feed,
which every reacting capability follows. An API process of the cluster profile
does not commit: it appends to the event log, and a worker's commit step
announces.
"""

from __future__ import annotations

import logging
from typing import Protocol

from hypemeter.changes.codec import ChangeSet
from hypemeter.changes.feed import ChangeFeed
from hypemeter.errors import StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.ports import AppendResult, EventStore

log = logging.getLogger("hypemeter.commit")


class EventSink(Protocol):
    """Where ingest hands its valid events: a commit step, or the event log's writer."""

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult: ...


class CommitStep:
    """Commit to the store, then announce what was committed."""

    def __init__(self, store: EventStore, feed: ChangeFeed) -> None:
        self._store = store
        self._feed = feed

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        """Raises Overloaded and StoreUnavailable.

        A StoreUnavailable may come after the store committed (a connection lost while
        the commit was being confirmed): the change set is then never announced, and
        the tenant's readers are told to repair from the store instead.
        """
        try:
            appended = await self._store.append(tenant_id, batch)
        except StoreUnavailable:
            try:
                await self._feed.rewritten(tenant_id)
            except Exception:
                log.exception("could not tell the change feed of an uncertain commit")
            raise
        if not appended.accepted or appended.changes is None:
            return appended  # nothing committed: nothing to announce
        change = ChangeSet(tenant_id, appended.seq, appended.committed_us, appended.changes)
        try:
            await self._feed.announce(change)
        except Exception:  # readers repair from the store; the events are committed
            log.exception("could not announce a commit")
        return appended
