"""``hypemeter worker``: move events from the log into the store, then announce them.

One task per log partition takes one message at a time, commits its events to
the store through the commit step (raw events and rollups in one transaction,
deduplicated by event id, then the change set announced on the change feed,
which carries it over the bus to every API process) and only then acknowledges
the message. A worker that dies before acknowledging leaves the message to be
redelivered, to it or another worker; the store's id index makes the second
commit a no-op, so nothing acknowledged is lost and nothing counts twice.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from hypemeter.backends.selection import open_backends, open_log
from hypemeter.changes.feed import ChangeFeed
from hypemeter.clock import SystemClock
from hypemeter.errors import InvalidInput, Overloaded, StoreUnavailable
from hypemeter.events.commit import CommitStep
from hypemeter.events.ports import LogDelivery, PartitionedLog
from hypemeter.settings import Settings

log = logging.getLogger("hypemeter.worker")
RETRY_SECONDS = 1.0


@dataclass(slots=True)
class WorkerStats:
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    retries: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)


class Worker:
    def __init__(self, log_: PartitionedLog, commit: CommitStep) -> None:
        self._log = log_
        self._commit = commit
        self.stats = WorkerStats()

    async def handle(self, delivery: LogDelivery) -> None:
        try:
            appended = await self._commit.append(delivery.tenant_id, delivery.batch)
        except (StoreUnavailable, Overloaded) as exc:
            self.stats.retries += 1
            log.warning("commit failed; the message will be redelivered", extra={"error": str(exc)})
            await delivery.retry(RETRY_SECONDS)
            return
        await delivery.ack()
        self.stats.messages += 1
        self.stats.events += appended.accepted
        self.stats.duplicates += appended.duplicates

    async def run(self, stopping: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._log.consume(p, self.handle, stopping), name=f"partition-{p}")
            for p in range(self._log.partitions)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_worker(
    settings: Settings, stopping: asyncio.Event | None = None, *, signals: bool = True
) -> WorkerStats:
    """Consume until ``stopping`` is set (and, with ``signals``, SIGTERM or SIGINT);
    in-flight messages finish first."""
    if not settings.log:
        raise InvalidInput("the worker needs HYPEMETER_LOG=nats://host:port", field="log")
    stopping = stopping or asyncio.Event()
    if signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
    backends = open_backends(settings, SystemClock(), direct=True)
    event_log = open_log(settings)
    await backends.store.start()
    await backends.bus.start()
    try:
        await event_log.start()
        feed = ChangeFeed(backends.bus)
        worker = Worker(event_log, CommitStep(backends.store, feed))
        log.info("worker consuming", extra={"partitions": event_log.partitions})
        await worker.run(stopping)
        return worker.stats
    finally:
        await event_log.aclose()
        await backends.bus.aclose()
        await backends.store.aclose()
