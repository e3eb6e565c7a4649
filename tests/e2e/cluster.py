"""The e2e suites on the cluster profile: PostgreSQL, NATS JetStream and Redis.

With ``HYPEMETER_E2E_CLUSTER=1`` every live server of the suites runs with
``profile=cluster`` as two API processes and two worker processes: the test process
serves the primary (uvicorn in a thread), and a ``hypemeter serve`` subprocess, the
twin, answers every other query; two ``hypemeter worker`` subprocesses move the
events from a JetStream stream of the server's own into a PostgreSQL schema of its
own, and live updates travel over Redis. A restart on the same data directory finds
the same schema and stream. ``tests/cluster`` adds the faults (killed workers,
restarted NATS, Redis and PostgreSQL) on private instances.

Ingest acknowledges once JetStream holds the events; the workers commit them
shortly after. Clients made by ``LiveServer.client`` wait after each accepted
ingest request until the stream is empty (its work-queue retention removes a
message when a worker acknowledges it, after its commit), so the suites can
read their own writes as on the embedded profile.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_core import to_jsonable_python

from hypemeter.settings import Settings

CLUSTER = os.environ.get("HYPEMETER_E2E_CLUSTER", "") not in {"", "0"}
POSTGRES = os.environ.get(
    "HYPEMETER_E2E_POSTGRES",
    "postgresql://postgres@127.0.0.1:5432/test" if CLUSTER else "",
)
NATS = os.environ.get("HYPEMETER_TEST_NATS", "nats://127.0.0.1:4222")
# One Redis database per test process (pytest-xdist's gw0, gw1...): live channels are
# named after the database, so servers of parallel test processes, whose tenants have
# the same names, never hear each other's change sets.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 16
REDIS = os.environ.get("HYPEMETER_TEST_REDIS", f"redis://127.0.0.1:6379/{WORKER}")
RUN = hashlib.md5(str(time.time_ns()).encode(), usedforsecurity=False).hexdigest()[:8]
SCHEMA_PREFIX = f"hm_e2e_{RUN}_"
STREAM_PREFIX = f"E2E_{RUN}_"
SETTLE_SECONDS = 60.0
# Seals connector secrets in the PostgreSQL runs (the embedded ones make a key file).
E2E_SECRET_KEY = "-CI4SFNXRO1PNXfusXsy28h0-ZuXf9EPrRsgVLjmXqQ="
INGEST_PATHS = ("/v1/events", "/v1/track/", "/v1/sdk/")


def _digest(data: Path) -> str:
    return hashlib.md5(str(data).encode(), usedforsecurity=False).hexdigest()[:12]


def store_dsn(data: Path) -> str:
    return f"{POSTGRES}?schema={SCHEMA_PREFIX}{_digest(data)}"


def backend_env(data: Path | None) -> dict[str, str]:
    """The settings (as environment) that put a server of ``data`` on the shared engines."""
    if not POSTGRES or data is None:
        return {}
    # A shared store has no key file beside it: every process of a server gets this key.
    env = {"HYPEMETER_STORE": store_dsn(data), "HYPEMETER_SECRET_KEYS": E2E_SECRET_KEY}
    if CLUSTER:
        env.update(
            HYPEMETER_PROFILE="cluster",
            HYPEMETER_LOG=f"{NATS}?stream={STREAM_PREFIX}{_digest(data)}",
            HYPEMETER_BUS=REDIS,
            HYPEMETER_RATE_LIMIT_STORAGE=REDIS,
        )
    return env


def backend_overrides(data: Path) -> dict[str, Any]:
    return {k.removeprefix("HYPEMETER_").lower(): v for k, v in backend_env(data).items()}


class WarmPool:
    """``hypemeter`` processes started ahead of need: each has paid its imports (about a
    second of CPU) by the time a test hands it a command line, so starting the twin
    API process and the two workers of a server costs the test almost nothing."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ready: list[subprocess.Popen[bytes]] = []
        atexit.register(self.close)

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYPEMETER_")}
        env["PYTHONUNBUFFERED"] = "1"
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("warm_process.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
        )

    def run(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Run ``hypemeter ARGS`` with ``env`` as its environment, output to ``log``."""
        while len(self._ready) < self._size + 1:
            self._ready.append(self._spawn())
        proc = self._ready.pop(0)
        assert proc.stdin is not None
        spec = {"args": args, "env": env, "log": str(log)}
        proc.stdin.write(json.dumps(spec).encode() + b"\n")
        proc.stdin.close()
        return proc

    def close(self) -> None:
        for proc in self._ready:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        for proc in self._ready:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._ready.clear()


POOL = WarmPool(size=3)
TWIN_SCRAPE_TOKEN = "e2e-twin-scrape-token"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives another process exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPEMETER_")}
    env["PYTHONUNBUFFERED"] = "1"
    for name, spec in type(settings).model_fields.items():
        value = getattr(settings, name)
        if value == spec.default:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float | Path):
            text = str(value)
        else:
            text = json.dumps(to_jsonable_python(value))
        env[f"HYPEMETER_{name.upper()}"] = text
    return env


class Processes:
    """The other processes of one server's cluster topology: the twin API process
    (``hypemeter serve``) and two ``hypemeter worker`` processes, on the server's
    schema and stream, started from the warm pool."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        from .support import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = settings_env(settings)
        twin_env = {
            **env,
            "HYPEMETER_DATA": str(settings.data / "twin"),
            "HYPEMETER_METRICS_TOKEN": self.scrape_token(settings),
            # Clients send the twin queries only (see Alternating): it decodes no ingest
            # bodies, and its start does not wait for a pool of decoding processes.
            "HYPEMETER_DECODE_WORKERS": "0",
            # One process polls the platforms (docs/deploy.md): the primary.
            "HYPEMETER_POLL_CONNECTORS": "false",
        }
        self._scrape = twin_env["HYPEMETER_METRICS_TOKEN"]
        self.logs = logs
        self.workers = [POOL.run(["worker"], env, logs / f"worker-{n}.log") for n in range(2)]
        self.twin = POOL.run(
            ["serve", "--host", "127.0.0.1", "--port", str(self.port)], twin_env, logs / "twin.log"
        )

    @staticmethod
    def scrape_token(settings: Settings) -> str:
        token = settings.metrics_token
        return token.get_secret_value() if token is not None else TWIN_SCRAPE_TOKEN

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in (self.twin, *self.workers):
                if proc.poll() is not None:
                    raise RuntimeError(f"a cluster process exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"the twin API process is not ready:\n{self.output()}")

    def reloads(self) -> int:
        """How often the twin reloaded keys and custom metrics (from its /metrics)."""
        response = httpx.get(
            f"{self.url}/metrics", headers={"Authorization": f"Bearer {self._scrape}"}, timeout=10
        )
        response.raise_for_status()
        for line in response.text.splitlines():
            if line.startswith("hypemeter_config_reloads_total "):
                return int(float(line.split()[1]))
        raise AssertionError("the twin's /metrics has no hypemeter_config_reloads_total")

    def output(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
            for log in sorted(self.logs.glob("*.log"))
        )

    def terminate(self) -> None:
        """SIGTERM all three: the workers finish their in-flight message and exit."""
        for proc in (self.twin, *self.workers):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Terminate all three; ``reap`` checks later that they exited cleanly (a worker
        takes up to its fetch wait to notice, which the next test need not wait for)."""
        self.terminate()
        STOPPED.append(self)
        reap(finished_only=True)

    def check_exits(self) -> None:
        codes = []
        for proc in (self.twin, *self.workers):
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        # uvicorn may end a graceful shutdown by raising the captured SIGTERM again.
        if any(code not in (0, -signal.SIGTERM) for code in codes):
            raise AssertionError(f"cluster processes exited with {codes}:\n{self.output()}")


STOPPED: list[Processes] = []


def reap(*, finished_only: bool = False) -> None:
    """Wait for the stopped cluster processes (or check those that have all exited);
    fail if one did not exit cleanly."""
    failures = []
    for stopped in list(STOPPED):
        if finished_only and any(p.poll() is None for p in (stopped.twin, *stopped.workers)):
            continue
        STOPPED.remove(stopped)
        try:
            stopped.check_exits()
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        raise AssertionError("\n\n".join(failures))


async def _stream_messages(settings: Settings) -> int:
    import nats
    from nats.js.errors import NotFoundError

    from hypemeter.backends.cluster.nats_log import JetStreamLog, LogConfig

    log = JetStreamLog(settings.log, LogConfig())
    nc = await nats.connect(log.servers)
    try:
        info = await nc.jetstream().stream_info(log.stream)
        return int(info.state.messages)
    except NotFoundError:  # no server ever made the stream: nothing is in flight
        return 0
    finally:
        await nc.close()


def _run(coro: Any) -> Any:
    """Run a coroutine on a fresh loop in a helper thread (the caller may run a loop)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def settle(settings: Settings) -> None:
    """Wait until the workers committed every event in the server's stream."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while _run(_stream_messages(settings)):
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not empty the event log")
        time.sleep(0.01)


def settling_hooks(settings: Settings) -> dict[str, list[Any]]:
    """httpx event hooks that settle after every accepted ingest request."""
    if not settings.log:
        return {}

    def after(response: httpx.Response) -> None:
        request = response.request
        ingest = request.method == "POST" and request.url.path.startswith(INGEST_PATHS)
        if ingest and response.status_code < 300:
            settle(settings)

    return {"response": [after]}


class Alternating(httpx.HTTPTransport):
    """Sends every other query (``GET /v1/...``) to the twin API instance.

    Ingest, administration and live streams stay on the primary: per-process counters
    (/metrics) and answers that count this process's streams stay meaningful.
    """

    def __init__(self, twin_port: int) -> None:
        super().__init__()
        self._twin_port = twin_port
        self._queries = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.startswith("/v1/") and "/stream" not in path:
            self._queries += 1
            if self._queries % 2 == 0:
                request.url = request.url.copy_with(port=self._twin_port)
        return super().handle_request(request)


def config_hooks(twin: Processes) -> dict[str, list[Any]]:
    """httpx event hooks that, after a change of keys or custom metrics through the
    primary, wait until the twin process has reloaded them (it hears of it over the bus
    and counts its reloads in /metrics)."""

    def before(request: httpx.Request) -> None:
        if request.method != "GET" and request.url.path.startswith("/v1/admin/"):
            request.extensions["twin_reloads"] = twin.reloads()

    def after(response: httpx.Response) -> None:
        request = response.request
        before_change = request.extensions.get("twin_reloads")
        if before_change is not None and response.status_code < 300:
            deadline = time.monotonic() + SETTLE_SECONDS
            while twin.reloads() <= before_change:
                if time.monotonic() > deadline:
                    raise TimeoutError("the twin API process did not reload its keys")
                time.sleep(0.005)

    return {"request": [before], "response": [after]}


def merge_hooks(*hooks: dict[str, list[Any]]) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for found in hooks:
        for name, functions in found.items():
            merged.setdefault(name, []).extend(functions)
    return merged


async def drop_all() -> None:
    """Drop the schemas and streams this run made."""
    if POSTGRES:
        import asyncpg

        con = await asyncpg.connect(POSTGRES)
        try:
            names = await con.fetch(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", SCHEMA_PREFIX
            )
            for (name,) in names:
                await con.execute(f'DROP SCHEMA "{name}" CASCADE')
        finally:
            await con.close()
    if CLUSTER:
        import nats

        nc = await nats.connect(NATS)
        try:
            js = nc.jetstream()
            for name in await js.streams_info():
                if name.config.name and name.config.name.startswith(STREAM_PREFIX):
                    await js.delete_stream(name.config.name)
        finally:
            await nc.close()
