"""A cluster deployment made of real processes: ``hypemeter serve`` and ``hypemeter worker``.

A ``Deployment`` holds the DSNs of its PostgreSQL schema, its JetStream stream and
its Redis server, runs the CLI against them (``migrate``, ``tenants create``, ``keys
create``), starts API and worker subprocesses (each with a data directory and a log
file of its own) and reads what the store and the log hold, so that tests compare
what the API answered with what was stored. ``logs()`` gathers the tail of every
log it knows, for assertion messages.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import asyncpg
import httpx
import nats
from nats.js.errors import NotFoundError

from .daemons import free_port, tail

HYPEMETER = [sys.executable, "-m", "hypemeter"]
READY_TIMEOUT = 30.0
SETTLE_TIMEOUT = 60.0
T = TypeVar("T")
CREATED = re.compile(r"^key (?P<id>[0-9a-f]+) for tenant ")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop (the tests themselves are synchronous)."""
    return asyncio.run(coro)


class Logged(Protocol):
    def logs(self, lines: int = 30) -> str: ...


@dataclass(frozen=True, slots=True)
class Backends:
    store: str  # postgresql://...?schema=NAME
    log: str  # nats://...?stream=NAME
    bus: str  # redis://...
    rate_limits: str  # redis://... or memory://

    @property
    def schema(self) -> str:
        return dict(parse_qsl(urlparse(self.store).query))["schema"]

    @property
    def stream(self) -> str:
        return dict(parse_qsl(urlparse(self.log).query))["stream"]

    @property
    def postgres(self) -> str:
        """The store DSN without the schema parameter, as asyncpg takes it."""
        parsed = urlparse(self.store)
        rest = [(k, v) for k, v in parse_qsl(parsed.query) if k != "schema"]
        return urlunparse(parsed._replace(query=urlencode(rest)))

    @property
    def nats(self) -> str:
        return urlunparse(urlparse(self.log)._replace(query=""))


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    secret: str


class Process:
    """One ``hypemeter`` subprocess, its stdout and stderr in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], root: Path) -> None:
        self.name = name
        self.log_path = root / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*HYPEMETER, *args], stdout=log, stderr=subprocess.STDOUT, env=env
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL, and the exit status (-9)."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (in-flight work finishes first), SIGKILL past ``timeout``."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def logs(self, lines: int = 30) -> str:
        state = "running" if self.alive() else f"exited {self.proc.returncode}"
        return f"--- {self.name} (pid {self.pid}, {state}) ---\n{tail(self.log_path, lines)}"


class Api(Process):
    def __init__(self, name: str, env: dict[str, str], root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, ["serve", "--port", str(self.port)], env, root)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready within {timeout} s\n{self.logs()}")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"


class Deployment:
    """API and worker processes of one deployment on the given backends."""

    def __init__(
        self,
        root: Path,
        backends: Backends,
        *,
        settings: dict[str, str] | None = None,
        services: list[Logged] | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.backends = backends
        self.settings = {
            "PROFILE": "cluster",
            "STORE": backends.store,
            "LOG": backends.log,
            "BUS": backends.bus,
            "RATE_LIMIT_STORAGE": backends.rate_limits,
            "LOG_PARTITIONS": "4",
            "DECODE_WORKERS": "0",
            "ACCESS_LOG": "false",
            "LOG_LEVEL": "info",
            **(settings or {}),
        }
        self.services: list[Logged] = list(services or [])
        self.apis: list[Api] = []
        self.workers: list[Process] = []
        self._names: dict[str, int] = {}

    # -- processes -------------------------------------------------------------------

    def env(self, name: str, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYPEMETER_")}
        data = self.root / name
        data.mkdir(exist_ok=True)
        merged = {**self.settings, "DATA": str(data), **settings}
        env.update({f"HYPEMETER_{k}": v for k, v in merged.items()})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _name(self, kind: str) -> str:
        self._names[kind] = self._names.get(kind, 0) + 1
        return f"{kind}-{self._names[kind]}"

    def start_api(self, **settings: str) -> Api:
        """Start ``hypemeter serve`` on a free port (call ``wait_ready`` before use)."""
        name = self._name("api")
        api = Api(name, self.env(name, **settings), self.root)
        self.apis.append(api)
        return api

    def start_worker(self, **settings: str) -> Process:
        name = self._name("worker")
        worker = Process(name, ["worker"], self.env(name, **settings), self.root)
        self.workers.append(worker)
        return worker

    def wait_ready(self) -> None:
        for api in self.apis:
            api.wait_ready()
        for worker in self.workers:
            assert worker.alive(), f"{worker.name} exited\n{self.logs()}"

    def cli(self, *args: str) -> str:
        """Run ``hypemeter ARGS`` against the backends (no server holds its data directory)."""
        done = subprocess.run(
            [*HYPEMETER, *args],
            capture_output=True,
            text=True,
            env=self.env("admin"),
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (
            f"hypemeter {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def migrate(self) -> None:
        out = self.cli("migrate")
        assert f"log stream {self.backends.stream}: ready" in out, out

    def provision(self, tenant: str, scopes: str = "ingest,read,admin") -> Key:
        """Create the tenant and one key with ``scopes``, through the CLI."""
        self.cli("tenants", "create", tenant)
        return self.create_key(tenant, scopes)

    def create_key(self, tenant: str, scopes: str) -> Key:
        lines = self.cli("keys", "create", "--tenant", tenant, "--scopes", scopes).splitlines()
        created = CREATED.match(lines[0])
        assert created, lines
        return Key(created["id"], lines[-1])

    def close(self) -> None:
        """Stop the APIs, then the workers (which finish their in-flight messages)."""
        for proc in [*self.apis, *self.workers]:
            proc.terminate()

    # -- what the backends hold ------------------------------------------------------

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a query in the deployment's schema."""
        return run(self._with_store(lambda con: con.fetch(sql, *args)))

    async def _with_store(self, fn: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        con = await asyncpg.connect(
            self.backends.postgres,
            server_settings={"search_path": self.backends.schema},
            timeout=10,
        )
        try:
            return [tuple(row) for row in await fn(con)]
        finally:
            await con.close()

    def backlog(self) -> int | None:
        """Messages the workers have yet to take or to acknowledge, over every partition;
        None until each partition has its consumer.

        Not the stream's message count: nats-server 2.9 may keep messages that were
        acknowledged just before it was killed (work-queue removals not yet on disk),
        although every consumer has moved past them and their events are stored.
        """
        found = self.consumers()
        if len(found) < int(self.settings["LOG_PARTITIONS"]):
            return None
        return sum(int(c.num_pending) + int(c.num_ack_pending) for c in found)

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until the workers committed and acknowledged every message of the log."""
        deadline = time.monotonic() + timeout
        left: int | None = None
        while time.monotonic() < deadline:
            try:
                left = self.backlog()
            except (OSError, TimeoutError, nats.errors.Error):
                left = None  # the log does not answer (yet)
            if left == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"backlog {left} after {timeout} s\n{self.logs()}")

    def consumers(self) -> list[Any]:
        return run(self._consumers())

    async def _consumers(self) -> list[Any]:
        nc = await nats.connect(self.backends.nats, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return list(await nc.jetstream(timeout=5).consumers_info(self.backends.stream))
        except NotFoundError:  # no stream yet
            return []
        finally:
            await nc.close()

    def shorten_ack_wait(self, seconds: float) -> None:
        """Let JetStream redeliver a message held by a dead worker after ``seconds``.

        The workers create their consumers with a 60 s ack wait (LogConfig's default,
        not a setting); a test that kills a worker would otherwise wait that long for
        the partition it held. Only ack_wait changes: the rest of each consumer's
        configuration is what the workers made.
        """
        run(self._shorten_ack_wait(seconds, int(self.settings["LOG_PARTITIONS"])))

    async def _shorten_ack_wait(self, seconds: float, partitions: int) -> None:
        nc = await nats.connect(self.backends.nats, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream(timeout=5)
            deadline = time.monotonic() + READY_TIMEOUT
            while len(found := await js.consumers_info(self.backends.stream)) < partitions:
                assert time.monotonic() < deadline, f"{len(found)} consumers\n{self.logs()}"
                await asyncio.sleep(0.05)
            for info in found:
                config = info.config
                config.ack_wait = seconds
                await js.add_consumer(self.backends.stream, config)
            for info in await js.consumers_info(self.backends.stream):
                assert info.config.ack_wait == seconds, info.config
        finally:
            await nc.close()

    def drop(self, *, schema: bool, stream: bool) -> None:
        """Drop the schema and delete the stream (those on shared services)."""
        if schema:
            run(self._drop_schema())
        if stream:
            run(self._delete_stream())

    async def _drop_schema(self) -> None:
        con = await asyncpg.connect(self.backends.postgres, timeout=10)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{self.backends.schema}" CASCADE')
        finally:
            await con.close()

    async def _delete_stream(self) -> None:
        nc = await nats.connect(self.backends.nats, connect_timeout=5, max_reconnect_attempts=0)
        try:
            await nc.jetstream(timeout=5).delete_stream(self.backends.stream)
        except NotFoundError:
            pass
        finally:
            await nc.close()

    # -- diagnostics -----------------------------------------------------------------

    def logs(self, lines: int = 25) -> str:
        """The tail of every process and private service log, for assertion messages."""
        parts = [p.logs(lines) for p in [*self.apis, *self.workers]]
        parts += [s.logs(lines) for s in self.services]
        return "\n".join(parts)
