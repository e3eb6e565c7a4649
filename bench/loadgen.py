"""The load client. It runs in its own process, apart from the server and the harness.

Requests are built in full before the clock starts; during the timed part the
client only writes pre-built bytes, cuts replies by Content-Length and decodes
the small JSON acknowledgement.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import resource
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import uvloop

from bench.httpclient import Connection, HttpError, build_request
from bench.server import HOST, cpu_seconds
from bench.stats import percentile
from bench.workload import batch_templates, read_lines, track_templates, with_prefix

RETRY_AFTER_S = 1.0
# The floor under B1s: an authenticated route that reads no store (the key needs admin).
FLOOR_PATH = "/v1/admin/metrics"
STALL_GRACE_S = 120.0  # how long past the deadline in-flight requests may take
MAX_ERRORS_KEPT = 5


class Ack(msgspec.Struct):
    """The part of an ingest reply the client counts."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[msgspec.Raw] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LoadJob:
    """What to send, where, how hard and for how long.

    ``kind`` is ``batch`` (NDJSON to /v1/events), ``track`` (one event to /v1/track) or
    ``floor`` (``GET FLOOR_PATH``: authenticated, reads no store; what every route pays).
    """

    kind: str
    port: int
    key: str
    server_pid: int
    pool: Path
    prefix: str
    connections: int
    duration_s: float
    max_requests: int
    batch_events: int = 5000
    rate_events_per_s: float = 0.0  # paced to this many events per second; 0: as fast as it can


@dataclass(slots=True)
class LoadResult:
    requests: int = 0
    events_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    prepare_s: float = 0.0
    exhausted: bool = False

    @property
    def acked(self) -> int:
        """Events acknowledged durably: accepted plus recognised duplicates, from 200s."""
        return self.accepted + self.duplicates


@functools.cache
def _lines(pool: Path) -> list[bytes]:
    return read_lines(pool)


@functools.cache
def _batch_templates(pool: Path, batch_events: int) -> list[tuple[bytes, int]]:
    templates = batch_templates(_lines(pool), batch_events)
    return [(body, body.count(b"\n")) for body in templates]


@functools.cache
def _track_templates(pool: Path, limit: int) -> list[tuple[str, bytes]]:
    return track_templates(_lines(pool), limit)


def _passes(prefix: str) -> Iterator[str]:
    """One id prefix per pass over the pool: ids stay unique however many passes a run makes."""
    return (f"{prefix}p{n}" for n in itertools.count())


def prepare(job: LoadJob) -> list[tuple[bytes, int]]:
    """Every request the run may send, as (bytes, events in it)."""
    host = f"{HOST}:{job.port}"
    auth = {"Authorization": f"Bearer {job.key}"}
    made: Iterator[tuple[bytes, int]]
    if job.kind == "batch":
        ndjson = {**auth, "Content-Type": "application/x-ndjson"}
        batches = _batch_templates(job.pool, job.batch_events)
        made = (
            (build_request("POST", "/v1/events", host, ndjson, with_prefix(body, prefix)), events)
            for prefix in _passes(job.prefix)
            for body, events in batches
        )
    elif job.kind == "floor":
        floor = build_request("GET", FLOOR_PATH, host, auth, b"")
        made = itertools.repeat((floor, 0))
    else:
        json = {**auth, "Content-Type": "application/json"}
        tracks = _track_templates(job.pool, job.max_requests)
        made = (
            (build_request("POST", f"/v1/track/{metric}", host, json, with_prefix(body, p)), 1)
            for p in _passes(job.prefix)
            for metric, body in tracks
        )
    return list(itertools.islice(made, job.max_requests))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Run:
    """Shared state of the connections of one timed run."""

    def __init__(
        self, requests: list[tuple[bytes, int]], deadline: float, rate: float = 0.0
    ) -> None:
        self.requests = requests
        self.deadline = deadline
        self.rate = rate
        self.started = time.perf_counter()
        self.scheduled = 0  # events handed out so far, for pacing
        self.next = itertools.count()
        self.latencies: list[float] = []
        self.result = LoadResult()
        self.decode = msgspec.json.Decoder(Ack).decode

    def take(self) -> tuple[bytes, int] | None:
        if time.perf_counter() >= self.deadline:
            return None
        index = next(self.next)
        if index >= len(self.requests):
            self.result.exhausted = True
            return None
        return self.requests[index]

    def record(self, status: int, body: bytes, events: int, seconds: float) -> None:
        result = self.result
        result.statuses[status] += 1
        self.latencies.append(seconds)
        if status not in (429, 503):
            result.requests += 1
            result.events_sent += events
        if status == 200:
            ack = self.decode(body)
            result.accepted += ack.accepted
            result.duplicates += ack.duplicates
            result.rejected += len(ack.rejected)
        elif len(result.errors) < MAX_ERRORS_KEPT:
            result.errors.append(f"{status}: {body[:300].decode(errors='replace')}")

    async def drive(self, connection: Connection) -> None:
        """Send requests one after another until the deadline; retry 429/503 after a pause."""
        while (item := self.take()) is not None:
            data, events = item
            if self.rate:
                due = self.started + self.scheduled / self.rate
                self.scheduled += events
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            while True:
                started = time.perf_counter()
                try:
                    status, body = await connection.request(data)
                except (HttpError, OSError) as exc:
                    self.result.errors.append(f"connection failed: {exc!r}")
                    return
                self.record(status, body, events, time.perf_counter() - started)
                if status not in (429, 503) or time.perf_counter() >= self.deadline:
                    break
                await asyncio.sleep(RETRY_AFTER_S)


async def _load(job: LoadJob, requests: list[tuple[bytes, int]]) -> LoadResult:
    connections = [await Connection.open(HOST, job.port) for _ in range(job.connections)]
    cpu_before, server_before = _cpu_s(), cpu_seconds(job.server_pid)
    started = time.perf_counter()
    run = _Run(requests, started + job.duration_s, job.rate_events_per_s)
    try:
        async with asyncio.timeout(job.duration_s + STALL_GRACE_S):
            await asyncio.gather(*(run.drive(c) for c in connections))
    except TimeoutError:
        run.result.errors.append(f"the server stalled: no reply within {STALL_GRACE_S:g} s")
    finally:
        for connection in connections:
            connection.close()
    result = run.result
    result.wall_s = time.perf_counter() - started
    result.client_cpu_s = _cpu_s() - cpu_before
    result.server_cpu_s = cpu_seconds(job.server_pid) - server_before
    result.p50_ms = percentile(run.latencies, 0.50) * 1000
    result.p99_ms = percentile(run.latencies, 0.99) * 1000
    return result


def run_load(job: LoadJob) -> LoadResult:
    """Build every request, then send them for ``job.duration_s`` seconds; the entry point."""
    started = time.perf_counter()
    requests = prepare(job)
    prepare_s = time.perf_counter() - started
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(_load(job, requests))
    result.prepare_s = prepare_s
    return result
