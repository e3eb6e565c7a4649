"""The cluster topology of the benchmarks: one API process and two workers on PostgreSQL,
NATS JetStream and Redis (the machine's own servers), in a schema and a stream of their own.

Ingest is acknowledged once JetStream holds the events; the workers commit them to
PostgreSQL after. ``drain`` waits until the stream is empty (its work-queue retention
drops a message when a worker acknowledges it, after its commit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES = os.environ.get("HYPEMETER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NATS = os.environ.get("HYPEMETER_BENCH_NATS", "nats://127.0.0.1:4222")
REDIS = os.environ.get("HYPEMETER_BENCH_REDIS", "redis://127.0.0.1:6379/0")
WORKERS = 2
DRAIN_TIMEOUT_S = 3600.0


@dataclass(slots=True)
class Cluster:
    """A schema, a stream, and the worker processes of one benchmark run."""

    name: str = field(default_factory=lambda: f"bench_{uuid.uuid4().hex[:10]}")
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
            for _ in range(WORKERS):
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
        while asyncio.run(self._in_stream()):
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
