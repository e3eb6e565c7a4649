"""B3 (query latency) and B6 (recovery) of PERF.md over one store of ``events`` events.

The events (the seeded workload over the last 7 days) are ingested through the
HTTP API into a fresh server. Once the server is idle (rollups folded and
compacted), 16 concurrent clients query each endpoint in turn from another
process. Then B6: the server is stopped and started again on the same data
(time until /readyz answers 200), and the rollups are rebuilt from the raw
events with ``hypemeter rebuild`` (events/s). Answers over a fixed range are
compared before the restart, after it and after the rebuild.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench.cluster import Cluster
from bench.httpclient import Connection, HttpError, build_request
from bench.loadgen import LoadJob, run_load
from bench.report import Figure
from bench.server import (
    HOST,
    TENANT,
    cpu_seconds,
    free_port,
    hypemeter,
    logged_problems,
    server_env,
    stop,
    wait_ready,
)
from bench.stats import percentile
from bench.workload import INFLUENCERS, Pool

CONNECTIONS = 16
FLOOR_PATH = "/v1/admin/metrics"
LOAD_CONNECTIONS = 4
IDLE_CPU_FRACTION = 0.05
QUIET_S = 3.0
SETTLE_MIN_S = 8.0  # the server compacts leftover rollup rows after 5 s without events
SETTLE_MAX_S = 600.0
TARGETS = {
    "influencer_7d_hourly": "<= 20",
    "aggregate_platform_24h": "<= 50",
    "trending_24h": "<= 100",
}


@dataclass(frozen=True, slots=True)
class QueryJob:
    port: int
    key: str
    paths: list[str]
    connections: int
    duration_s: float


@dataclass(slots=True)
class QueryResult:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    wall_s: float = 0.0


def query_paths(kind: str) -> list[str]:
    """The requests of one B3 query kind; they vary so no answer is served twice in a row."""
    influencers = [f"inf-{i:04d}" for i in range(INFLUENCERS)]
    random.Random(7).shuffle(influencers)
    if kind == "influencer_7d_hourly":
        return [
            f"/v1/influencers/{i}/metrics?period=7d&granularity=hour&metrics=likes,comments,shares"
            for i in influencers
        ]
    if kind == "aggregate_platform_24h":
        return [
            f"/v1/metrics/aggregate?metric={m}&group_by=platform&period=24h"
            for m in ("likes", "views", "comments", "shares", "clicks", "impressions")
        ]
    return [f"/v1/content/trending?hours_back=24&min_interactions={n}" for n in (1, 5, 10, 20)]


async def _drive(job: QueryJob) -> QueryResult:
    host = f"{HOST}:{job.port}"
    auth = {"Authorization": f"Bearer {job.key}"}
    requests = [build_request("GET", p, host, auth, b"") for p in job.paths]
    order = itertools.cycle(range(len(requests)))
    latencies: list[float] = []
    result = QueryResult()
    connections = [await Connection.open(HOST, job.port) for _ in range(job.connections)]
    started = time.perf_counter()
    deadline = started + job.duration_s

    async def loop(connection: Connection) -> None:
        while time.perf_counter() < deadline:
            data = requests[next(order)]
            sent = time.perf_counter()
            try:
                status, body = await connection.request(data)
            except (HttpError, OSError) as exc:
                result.errors.append(f"connection failed: {exc!r}")
                return
            latencies.append(time.perf_counter() - sent)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != 200 and len(result.errors) < 5:
                result.errors.append(f"{status}: {body[:200].decode(errors='replace')}")

    try:
        await asyncio.gather(*(loop(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    result.wall_s = time.perf_counter() - started
    result.requests = len(latencies)
    result.p50_ms = percentile(latencies, 0.5) * 1000
    result.p99_ms = percentile(latencies, 0.99) * 1000
    return result


def run_query_load(job: QueryJob) -> QueryResult:
    """Entry point in the client process."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_drive(job))


@dataclass(slots=True)
class _Store:
    """A data directory with the bench tenant, its keys, and the server running on it."""

    data: Path
    env: dict[str, str]
    cluster: Cluster | None = None  # the cluster topology: workers beside the API process
    ingest_key: str = ""
    read_key: str = ""
    admin_key: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    problems: list[str] = field(default_factory=list)

    def provision(self) -> None:
        hypemeter("tenants", "create", TENANT, "--data", str(self.data), env=self.env)
        for scope in ("ingest", "read", "admin"):
            out = hypemeter(
                "keys", "create", "--tenant", TENANT, "--scopes", scope,
                "--data", str(self.data), env=self.env,
            )  # fmt: skip
            key = out.strip().splitlines()[-1]
            if scope == "ingest":
                self.ingest_key = key
            elif scope == "read":
                self.read_key = key
            else:
                self.admin_key = key

    def launch(self) -> float:
        """Start the server; seconds until /readyz answered 200."""
        self.port = free_port()
        log = (self.data / "server.log").open("ab")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hypemeter", "serve", "--port", str(self.port),
             "--data", str(self.data)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_ready(self.port, self.process)
        if self.cluster is not None and not self.cluster.workers:
            self.cluster.start_workers(self.env, self.data / "workers.log")
        return time.perf_counter() - started

    def halt(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def remove(self) -> None:
        """Stop everything and delete the data (and the cluster's schema and stream)."""
        self.halt()
        if self.cluster is not None:
            self.cluster.remove()
            self.problems += logged_problems(self.data / "workers.log")
        shutil.rmtree(self.data, ignore_errors=True)

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def get(self, path: str) -> bytes:
        import urllib.request

        request = urllib.request.Request(
            f"http://{HOST}:{self.port}{path}",
            headers={"Authorization": f"Bearer {self.read_key}"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            body: bytes = reply.read()
        return body


def _wait_idle(pid: int) -> float:
    """Seconds until the server has used under 5% of a core for QUIET_S seconds."""
    started = time.monotonic()
    time.sleep(SETTLE_MIN_S)
    while time.monotonic() - started < SETTLE_MAX_S:
        before = cpu_seconds(pid)
        time.sleep(QUIET_S)
        if cpu_seconds(pid) - before < IDLE_CPU_FRACTION * QUIET_S:
            return time.monotonic() - started
    raise RuntimeError(f"the server did not settle within {SETTLE_MAX_S:.0f} s")


def _answers(store: _Store, fixed: str) -> list[bytes]:
    """Answers over a fixed range, without their timing statistics."""
    paths = [
        f"/v1/influencers/inf-{i:04d}/metrics?{fixed}&granularity=hour"
        "&metrics=likes,comments,followers,engagement_rate,emv"
        for i in (0, 1, 17, 500)
    ]
    paths += [
        f"/v1/metrics/aggregate?metric=views&group_by={g}&{fixed}&limit=1000"
        for g in ("platform", "campaign", "day")
    ]
    paths.append(f"/v1/leaderboard?metric=engagement&{fixed}&limit=50")
    return [re.sub(rb'"statistics":\{[^}]*\}', b"", store.get(p)) for p in paths]


def _query_figures(
    executor: Executor,
    store: _Store,
    seconds: float,
    say: Any,
    bench: str,
    prefix: str,
    *,
    runs: int,
    notes: dict[str, Any] | None = None,
) -> list[Figure]:
    """Each B3 query kind under 16 connections, ``runs`` times: p99, p50, rate."""
    figures: list[Figure] = []
    for kind, target in TARGETS.items():
        results = [
            executor.submit(
                run_query_load,
                QueryJob(store.port, store.read_key, query_paths(kind), CONNECTIONS, seconds),
            ).result()
            for _ in range(runs)
        ]
        p99 = [r.p99_ms for r in results]
        rate = [r.requests / r.wall_s for r in results]
        bad = sum(n for r in results for s, n in r.statuses.items() if s != 200)
        say(
            f"  {prefix}{kind}: p99 {', '.join(f'{v:.1f}' for v in p99)} ms, "
            f"{', '.join(f'{v:,.0f}' for v in rate)} req/s, non-200: {bad}"
        )
        name = f"{prefix}{kind}"
        figures.append(Figure.of_runs(bench, f"{name}_p99_ms", p99, target, "16 connections"))
        figures.append(Figure.of_runs(bench, f"{name}_p50_ms", [r.p50_ms for r in results]))
        figures.append(Figure.of_runs(bench, f"{name}_requests_per_s", rate))
        if notes is not None:
            notes[name] = {"non_200": bad, "errors": [e for r in results for e in r.errors][:5]}
    return figures


def run_queries(
    executor: Executor, pool: Pool, runs: int, seconds: float, say: Any, *, cluster: bool = False
) -> tuple[list[Figure], dict[str, Any]]:
    """B3 and B6; on the cluster topology B3 only (as ``B3-cluster``)."""
    data = Path(tempfile.mkdtemp(prefix="hypemeter-bench-b3-"))
    env = server_env()
    topology = Cluster() if cluster else None
    if topology is not None:
        env.update(topology.env())
    store = _Store(data, env, topology)
    bench = "B3-cluster" if cluster else "B3"
    notes: dict[str, Any] = {"events": pool.events}
    figures: list[Figure] = []
    try:
        store.provision()
        store.launch()
        assert store.process is not None
        say(f"  ingesting {pool.events:,} events ...")
        load = executor.submit(
            run_load,
            LoadJob(
                kind="batch",
                port=store.port,
                key=store.ingest_key,
                server_pid=store.process.pid,
                pool=pool.path,
                prefix=f"b3{time.time_ns():x}",
                connections=LOAD_CONNECTIONS,
                duration_s=3600.0,
                max_requests=-(-pool.events // 5000),
                batch_events=5000,
            ),
        ).result()
        notes["ingest"] = {
            "accepted": load.accepted,
            "duplicates": load.duplicates,
            "rejected": load.rejected,
            "seconds": round(load.wall_s, 1),
            "errors": load.errors,
        }
        if topology is not None:
            say(f"  {load.accepted:,} acknowledged in {load.wall_s:.0f} s; the workers commit ...")
            notes["drain_s"] = round(topology.drain(), 1)
            notes["committed_events_per_s"] = round(
                load.accepted / (load.wall_s + notes["drain_s"])
            )
            say(f"  committed {notes['committed_events_per_s']:,} events/s")
        else:
            say(f"  {load.accepted:,} accepted in {load.wall_s:.0f} s; waiting for the rollups")
            notes["store_mb"] = round(
                sum(p.stat().st_size for p in data.glob("hypemeter.duckdb*")) / 1e6, 1
            )
        notes["settle_s"] = round(_wait_idle(store.process.pid), 1)
        # The floor under every query: an authenticated route that reads no store.
        floor = [
            executor.submit(
                run_query_load,
                QueryJob(store.port, store.admin_key, [FLOOR_PATH], CONNECTIONS, seconds),
            ).result()
            for _ in range(runs)
        ]
        say(f"  floor ({FLOOR_PATH}): p99 {', '.join(f'{r.p99_ms:.1f}' for r in floor)} ms")
        figures.append(
            Figure.of_runs(bench, "floor_authenticated_no_store_p99_ms", [r.p99_ms for r in floor])
        )
        figures.append(
            Figure.of_runs(bench, "floor_requests_per_s", [r.requests / r.wall_s for r in floor])
        )
        figures += _query_figures(executor, store, seconds, say, bench, "", runs=runs, notes=notes)
        notes["peak_rss_mb"] = round(store.peak_rss_mb(), 1)
        figures.append(Figure.of_runs(bench, "server_peak_rss_mb", [notes["peak_rss_mb"]]))
        if topology is not None:
            return figures, notes  # B6 (restart, rebuild) is the embedded store's

        now = time.time()
        end = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now - 3600))
        start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now - 6 * 86400))
        fixed = f"start={start}&end={end}"
        before = _answers(store, fixed)

        ready: list[float] = []
        for _ in range(runs):
            store.halt()
            ready.append(store.launch())
        say(f"  B6 restart to ready: {', '.join(f'{v:.2f}' for v in ready)} s")
        figures.append(Figure.of_runs("B6", "restart_to_ready_s", ready, "<= 5"))
        # B3 again from the moment the restarted server is ready: in-memory copies load
        # meanwhile, and the queries must not wait on the slow path for long.
        figures += _query_figures(executor, store, seconds, say, bench, "after_restart_", runs=1)
        after_restart = _answers(store, fixed)
        store.halt()

        rates: list[float] = []
        for _ in range(runs):
            out = hypemeter("rebuild", "--data", str(data), env=store.env)
            found = re.search(r"from ([\d,]+) events in ([\d.]+) s", out)
            if found is None:
                raise RuntimeError(f"unexpected rebuild output: {out!r}")
            folded, took = int(found.group(1).replace(",", "")), float(found.group(2))
            rates.append(folded / took)
        say(f"  B6 rebuild: {', '.join(f'{v:,.0f}' for v in rates)} events/s")
        figures.append(Figure.of_runs("B6", "rebuild_events_per_s", rates, ">= 1000000"))
        store.launch()
        after_rebuild = _answers(store, fixed)
        notes["same_answers_after_restart"] = before == after_restart
        notes["same_answers_after_rebuild"] = before == after_rebuild
        say(
            f"  answers identical after restart: {before == after_restart}, "
            f"after rebuild: {before == after_rebuild}"
        )
    finally:
        store.halt()
        store.problems = logged_problems(data / "server.log") if data.exists() else []
        store.remove()
        notes["server_problems"] = store.problems[:10]
    return figures, notes
