"""B1 (batch ingest throughput) and B1s (single-event ingest): one fresh server per run."""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

from bench.cluster import Cluster
from bench.loadgen import LoadJob, LoadResult, run_load
from bench.report import Figure
from bench.server import running_server
from bench.workload import Pool

CLIENT = "python asyncio+uvloop raw HTTP/1.1 keep-alive"
# Requests are built before the clock starts, enough for these rates; a run that
# sends them all ends early (its rate is still right) and says so in the notes.
B1_MAX_EVENTS_PER_S = 400_000
B1S_MAX_REQUESTS_PER_S = 40_000
RSS_TARGET = "<= 1536"  # B7: peak RSS through B1-B4 at most 1.5 GiB
# B1s against the floor of the same run (an authenticated route that reads no store).
FLOOR_RATIO_TARGET = ">= 0.6"


@dataclass(frozen=True, slots=True)
class LoadShape:
    bench: str
    kind: str
    connections: int
    duration_s: float
    max_requests: int
    batch_events: int = 5000
    cluster: bool = False  # the cluster topology (bench.cluster) instead of one process

    def on_cluster(self) -> LoadShape:
        return replace(self, bench=f"{self.bench}-cluster", cluster=True)


def b1_shape(duration_s: float) -> LoadShape:
    budget = math.ceil(duration_s * B1_MAX_EVENTS_PER_S / 5000)
    return LoadShape("B1", "batch", 8, duration_s, budget)


def b1s_shape(duration_s: float) -> LoadShape:
    return LoadShape("B1s", "track", 64, duration_s, math.ceil(duration_s * B1S_MAX_REQUESTS_PER_S))


@dataclass(frozen=True, slots=True)
class RunOutcome:
    load: LoadResult
    peak_rss_mb: float
    problems: list[str]
    # On the cluster: seconds after the load until the workers committed every event.
    drain_s: float = 0.0
    # B1s: the floor route's load on the same server, just before the track load.
    floor: LoadResult | None = None

    def floor_rate(self) -> float:
        assert self.floor is not None
        return self.floor.statuses.get(200, 0) / self.floor.wall_s

    def committed_rate(self) -> float:
        """Events/s from the first request until the last event was committed."""
        return self.load.acked / (self.load.wall_s + self.drain_s)

    def rate(self, per_event: bool) -> float:
        done = self.load.acked if per_event else self.load.statuses.get(200, 0)
        return done / self.load.wall_s

    def cpu_pct(self, seconds: float) -> float:
        return 100 * seconds / self.load.wall_s

    def notes(self) -> dict[str, Any]:
        load = self.load
        return {
            "wall_s": round(load.wall_s, 3),
            "requests": load.requests,
            "statuses": dict(load.statuses),
            "events_sent": load.events_sent,
            "accepted": load.accepted,
            "duplicates": load.duplicates,
            "rejected": load.rejected,
            "p50_ms": round(load.p50_ms, 2),
            "prepare_s": round(load.prepare_s, 2),
            "requests_ran_out": load.exhausted,
            "client_errors": load.errors,
            "server_log": self.problems[:20],
            **({} if self.floor is None else {"floor_statuses": dict(self.floor.statuses)}),
        }


def one_run(executor: Executor, shape: LoadShape, pool: Pool, prefix: str) -> RunOutcome:
    """A fresh server, the load from another process, the server's peak RSS, then SIGTERM.

    Single-event runs first load the floor route on the same connections for as long,
    so that the track rate can be read as a fraction of what any route can do here.
    """
    cluster = Cluster() if shape.cluster else None
    drain_s = 0.0
    track = shape.kind == "track"
    floor: LoadResult | None = None
    with running_server(cluster, scopes="ingest,admin" if track else "ingest") as server:
        job = LoadJob(
            kind=shape.kind,
            port=server.port,
            key=server.key,
            server_pid=server.process.pid,
            pool=pool.path,
            prefix=prefix,
            connections=shape.connections,
            duration_s=shape.duration_s,
            max_requests=shape.max_requests,
            batch_events=shape.batch_events,
        )
        if track:
            floor = executor.submit(run_load, replace(job, kind="floor")).result()
        load = executor.submit(run_load, job).result()
        rss = server.peak_rss_mb()
        if cluster is not None:
            drain_s = cluster.drain()
    return RunOutcome(load, rss, server.problems, drain_s, floor)


def run_ingest(
    executor: Executor, shape: LoadShape, pool: Pool, runs: int
) -> tuple[list[Figure], dict[str, Any]]:
    """``runs`` runs of one ingest benchmark; its figures and per-run notes."""
    session = f"{shape.bench.lower()}{time.time_ns():x}"
    outcomes: list[RunOutcome] = []
    for n in range(runs):
        outcome = one_run(executor, shape, pool, f"{session}r{n}")
        outcomes.append(outcome)
        _progress(shape, n, outcome)
    batch = shape.kind == "batch"
    name = "events_per_s" if batch else "req_per_s"
    target = ">= 200000" if batch else ">= 5000"
    figures = [
        Figure.of_runs(shape.bench, name, [o.rate(batch) for o in outcomes], target, CLIENT),
        Figure.of_runs(
            shape.bench,
            "p99_ms",
            [o.load.p99_ms for o in outcomes],
            "<= 250" if batch else None,
            CLIENT,
        ),
        Figure.of_runs(
            shape.bench, "peak_rss_mb", [o.peak_rss_mb for o in outcomes], RSS_TARGET, CLIENT
        ),
        Figure.of_runs(
            shape.bench,
            "server_cpu_pct",
            [o.cpu_pct(o.load.server_cpu_s) for o in outcomes],
            client=CLIENT,
        ),
        Figure.of_runs(
            shape.bench,
            "client_cpu_pct",
            [o.cpu_pct(o.load.client_cpu_s) for o in outcomes],
            client=CLIENT,
        ),
    ]
    if all(o.floor is not None for o in outcomes):
        figures.append(
            Figure.of_runs(
                shape.bench, "floor_req_per_s", [o.floor_rate() for o in outcomes], client=CLIENT
            )
        )
        figures.append(
            Figure.of_runs(
                shape.bench,
                "fraction_of_floor",
                [o.rate(batch) / o.floor_rate() for o in outcomes],
                FLOOR_RATIO_TARGET,
                CLIENT,
            )
        )
    if batch:
        rejected = [100 * o.load.rejected / max(1, o.load.events_sent) for o in outcomes]
        figures.append(Figure.of_runs(shape.bench, "rejected_pct", rejected, client=CLIENT))
    if shape.cluster:
        figures.append(
            Figure.of_runs(
                shape.bench,
                "committed_events_per_s" if batch else "committed_req_per_s",
                [o.committed_rate() for o in outcomes],
                client=CLIENT,
            )
        )
        figures.append(
            Figure.of_runs(shape.bench, "drain_s", [o.drain_s for o in outcomes], client=CLIENT)
        )
    notes = {
        "client": CLIENT,
        "connections": shape.connections,
        "duration_s": shape.duration_s,
        "runs": [o.notes() for o in outcomes],
    }
    return figures, notes


def _progress(shape: LoadShape, n: int, outcome: RunOutcome) -> None:
    load = outcome.load
    batch = shape.kind == "batch"
    unit = "events/s" if batch else "req/s"
    others = {s: c for s, c in load.statuses.items() if s != 200}
    print(
        f"  {shape.bench} run {n + 1}: {outcome.rate(batch):,.0f} {unit}, "
        f"p99 {load.p99_ms:.1f} ms, peak RSS {outcome.peak_rss_mb:.0f} MB, "
        f"server CPU {outcome.cpu_pct(load.server_cpu_s):.0f}%, "
        f"client CPU {outcome.cpu_pct(load.client_cpu_s):.0f}%, "
        f"non-200 {others or 'none'}, rejected {load.rejected:,}/{load.events_sent:,}, "
        f"server log lines >= WARNING: {len(outcome.problems)}"
        + (f", committed {outcome.committed_rate():,.0f}/s" if shape.cluster else "")
        + ("" if outcome.floor is None else f", floor {outcome.floor_rate():,.0f} req/s"),
        file=sys.stderr,
        flush=True,
    )
