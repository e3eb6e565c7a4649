"""B1 (batch ingest throughput) and B1s (single-event ingest): one fresh server per run.

On the cluster topology (B1-cluster, and B1c-w1/-w2/-w4 with 1, 2 and 4 workers) the
figures also say how fast the workers commit into PostgreSQL while the load runs
(``committed_events_per_s``, sustained: the slope of the committed count over the
load's last three quarters) and whether the backlog in JetStream grows meanwhile
(``backlog_growth_msgs_per_s``, the slope of the messages waiting; above zero the
workers fall behind and a longer burst only grows it).
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

from bench.cluster import Cluster, Sample, Sampler, slope
from bench.loadgen import LoadJob, LoadResult, run_load
from bench.report import Figure
from bench.server import running_server
from bench.workload import Pool

CLIENT = "python asyncio+uvloop raw HTTP/1.1 keep-alive"
# Requests are built before the clock starts, enough for these rates; a run that
# sends them all ends early (its rate is still right) and says so in the notes.
B1_MAX_EVENTS_PER_S = 400_000
B1S_MAX_REQUESTS_PER_S = 40_000
B1C_MAX_EVENTS_PER_S = 150_000
RSS_TARGET = "<= 1536"  # B7: peak RSS through B1-B4 at most 1.5 GiB
# B1s against the floor of the same run (an authenticated route that reads no store).
FLOOR_RATIO_TARGET = ">= 0.6"
B1C_TARGET = ">= 60000"  # B1c: events/s committed into PostgreSQL by the workers


@dataclass(frozen=True, slots=True)
class LoadShape:
    bench: str
    kind: str
    connections: int
    duration_s: float
    max_requests: int
    batch_events: int = 5000
    cluster: bool = False  # the cluster topology (bench.cluster) instead of one process
    workers: int = 2  # on the cluster: worker processes

    def on_cluster(self, workers: int | None = None) -> LoadShape:
        """B1-cluster (two workers), or B1c-wN with ``workers``."""
        if workers is None:
            return replace(self, bench=f"{self.bench}-cluster", cluster=True)
        return replace(self, bench=f"{self.bench}c-w{workers}", cluster=True, workers=workers)


def b1_shape(duration_s: float) -> LoadShape:
    budget = math.ceil(duration_s * B1_MAX_EVENTS_PER_S / 5000)
    return LoadShape("B1", "batch", 8, duration_s, budget)


def b1c_shape(duration_s: float, workers: int) -> LoadShape:
    """B1's load for the sustained cluster figures; the API acknowledges far below B1's
    rate, so fewer requests are built ahead."""
    budget = math.ceil(duration_s * B1C_MAX_EVENTS_PER_S / 5000)
    return LoadShape("B1", "batch", 8, duration_s, budget).on_cluster(workers)


def b1s_shape(duration_s: float) -> LoadShape:
    return LoadShape("B1s", "track", 64, duration_s, math.ceil(duration_s * B1S_MAX_REQUESTS_PER_S))


@dataclass(frozen=True, slots=True)
class RunOutcome:
    load: LoadResult
    peak_rss_mb: float
    problems: list[str]
    # On the cluster: seconds after the load until the workers committed every event.
    drain_s: float = 0.0
    # On the cluster: the committed count and the backlog, sampled while the load ran.
    samples: tuple[Sample, ...] = ()
    # B1s: the floor route's load on the same server, just before the track load.
    floor: LoadResult | None = None

    def floor_rate(self) -> float:
        assert self.floor is not None
        return self.floor.statuses.get(200, 0) / self.floor.wall_s

    def drained_rate(self) -> float:
        """Events/s from the first request until the last event was committed."""
        return self.load.acked / (self.load.wall_s + self.drain_s)

    def steady(self) -> list[Sample]:
        """The samples of the load's last three quarters (the first is its ramp-up)."""
        if not self.samples:
            return []
        end = self.samples[-1].at
        return [s for s in self.samples if s.at >= end - 0.75 * self.load.wall_s]

    def committed_rate(self) -> float:
        """Events/s the workers committed while the load ran (sustained)."""
        return slope(self.steady(), "committed")

    def backlog_growth(self) -> float:
        """Messages/s by which the backlog grew while the load ran (< 0: it shrank)."""
        return slope(self.steady(), "backlog")

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
    cluster = Cluster(worker_count=shape.workers) if shape.cluster else None
    drain_s = 0.0
    samples: list[Sample] = []
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
        sampler = Sampler(cluster) if cluster is not None else None
        if sampler is not None:
            sampler.start()
        try:
            load = executor.submit(run_load, job).result()
        finally:
            if sampler is not None:
                samples = sampler.stop()
        rss = server.peak_rss_mb()
        if cluster is not None:
            drain_s = cluster.drain()
    return RunOutcome(load, rss, server.problems, drain_s, tuple(samples), floor)


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
        figures.extend(_cluster_figures(shape, outcomes, batch))
    notes = {
        "client": CLIENT,
        "connections": shape.connections,
        "duration_s": shape.duration_s,
        "runs": [o.notes() for o in outcomes],
    }
    return figures, notes


def _cluster_figures(shape: LoadShape, outcomes: list[RunOutcome], batch: bool) -> list[Figure]:
    unit = "events" if batch else "req"
    measures = (
        (f"committed_{unit}_per_s", [o.committed_rate() for o in outcomes], B1C_TARGET),
        ("backlog_growth_msgs_per_s", [o.backlog_growth() for o in outcomes], None),
        (f"drained_{unit}_per_s", [o.drained_rate() for o in outcomes], None),
        ("drain_s", [o.drain_s for o in outcomes], None),
    )
    return [
        Figure.of_runs(shape.bench, name, runs, target if batch else None, CLIENT)
        for name, runs, target in measures
    ]


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
        + (
            f", committed {outcome.committed_rate():,.0f}/s while loaded, backlog "
            f"{outcome.backlog_growth():+,.1f} msgs/s, drained in {outcome.drain_s:.1f} s"
            if shape.cluster
            else ""
        )
        + ("" if outcome.floor is None else f", floor {outcome.floor_rate():,.0f} req/s"),
        file=sys.stderr,
        flush=True,
    )
