"""The cluster topology of the benchmarks: one API process and N workers (two unless said)
on PostgreSQL, NATS JetStream and Redis (the machine's own servers), in a schema and a
stream of their own.

Ingest is acknowledged once JetStream holds the events; the workers commit them to
PostgreSQL after. ``Sampler`` follows, while the load runs, how many events the workers
have committed (the sum of ``rollup_tenant_hour.events``: every committed event counts
there once) and how many messages wait in the stream (the backlog). ``drain`` waits
until the stream is empty (its work-queue retention drops a message when a worker
acknowledges it, after its commit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES = os.environ.get("HYPEMETER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NATS = os.environ.get("HYPEMETER_BENCH_NATS", "nats://127.0.0.1:4222")
REDIS = os.environ.get("HYPEMETER_BENCH_REDIS", "redis://127.0.0.1:6379/0")
WORKERS = 2
DRAIN_TIMEOUT_S = 3600.0
SAMPLE_EVERY_S = 1.0


@dataclass(slots=True)
class Cluster:
    """A schema, a stream, and the worker processes of one benchmark run."""

    name: str = field(default_factory=lambda: f"bench_{uuid.uuid4().hex[:10]}")
    worker_count: int = WORKERS
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return self.name.upper()

    def env(self) -> dict[str, str]:
        return {
            "HYPEMETER_PROFILE": "cluster",
            "HYPEMETER_STORE": f"{POSTGRES}?schema={self.name}",
            "HYPEMETER_LOG": f"{NATS}?stream={self.stream}",
            "HYPEMETER_BUS": REDIS,
            "HYPEMETER_RATE_LIMIT_STORAGE": REDIS,
        }

    def start_workers(self, env: dict[str, str], log_path: Path) -> None:
        with log_path.open("ab") as log:
            for _ in range(self.worker_count):
                self.workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "hypemeter", "worker"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.workers = []

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.poll() is None]

    def drain(self) -> float:
        """Seconds until the workers committed every event in the stream."""
        started = time.perf_counter()
        while self.backlog():
            if time.perf_counter() - started > DRAIN_TIMEOUT_S:
                raise RuntimeError("the workers did not empty the event log")
            time.sleep(0.01)
        return time.perf_counter() - started

    async def _in_stream(self) -> int:
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(NATS)
        try:
            return int((await nc.jetstream().stream_info(self.stream)).state.messages)
        except NotFoundError:
            return 0
        finally:
            await nc.close()

    async def committed(self) -> int:
        """Events the workers have committed to PostgreSQL so far."""
        import asyncpg

        con = await asyncpg.connect(POSTGRES, server_settings={"search_path": self.name})
        try:
            return int(
                await con.fetchval("SELECT coalesce(sum(events), 0) FROM rollup_tenant_hour")
            )
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await con.close()

    def sample(self) -> Sample:
        return Sample(time.perf_counter(), asyncio.run(self.committed()), self.backlog())

    def backlog(self) -> int:
        """Messages published and not yet committed (and acknowledged) by a worker."""
        return asyncio.run(self._in_stream())

    def remove(self) -> None:
        self.stop_workers()
        asyncio.run(self._remove())

    async def _remove(self) -> None:
        import asyncpg
        import nats
        from nats.js.errors import NotFoundError

        con = await asyncpg.connect(POSTGRES)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        finally:
            await con.close()
        nc = await nats.connect(NATS)
        try:
            await nc.jetstream().delete_stream(self.stream)
        except NotFoundError:
            pass
        finally:
            await nc.close()


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.perf_counter()
    committed: int  # events committed to PostgreSQL
    backlog: int  # messages waiting in the stream


@dataclass(slots=True)
class Sampler:
    """Samples a cluster every ``every_s`` seconds in a thread, from ``start`` to ``stop``."""

    cluster: Cluster
    every_s: float = SAMPLE_EVERY_S
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.cluster.sample())
            except Exception as exc:  # a failed sample leaves a gap, not a failed run
                print(f"  sampling the cluster failed: {exc!r}", file=sys.stderr, flush=True)
            self._stop.wait(self.every_s)

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        return self.samples


def slope(samples: list[Sample], value: str) -> float:
    """Least-squares rate of change per second of a sampled value (0 with < 2 samples)."""
    if len(samples) < 2:
        return 0.0
    xs = [s.at for s in samples]
    ys = [float(getattr(s, value)) for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
