"""The e2e suites on the cluster profile: PostgreSQL, NATS JetStream and Redis.

With ``HYPEMETER_E2E_CLUSTER=1`` every live server of the suites runs with
``profile=cluster`` as two API instances (the second, the twin, answers every other
query) and two workers, each in a thread with its own loop and connections: ingest
goes to a JetStream stream of its own, the workers move the events into a PostgreSQL
schema of its own, and live updates travel over Redis. A restart on the same data
directory finds the same schema and stream. ``tests/cluster`` runs the same topology
as separate processes.

Ingest acknowledges once JetStream holds the events; the workers commit them
shortly after. Clients made by ``LiveServer.client`` wait after each accepted
ingest request until the stream is empty (its work-queue retention removes a
message when a worker acknowledges it, after its commit), so the suites can
read their own writes as on the embedded profile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from hypemeter.settings import Settings

CLUSTER = os.environ.get("HYPEMETER_E2E_CLUSTER", "") not in {"", "0"}
POSTGRES = os.environ.get(
    "HYPEMETER_E2E_POSTGRES",
    "postgresql://postgres@127.0.0.1:5432/test" if CLUSTER else "",
)
NATS = os.environ.get("HYPEMETER_TEST_NATS", "nats://127.0.0.1:4222")
REDIS = os.environ.get("HYPEMETER_TEST_REDIS", "redis://127.0.0.1:6379/0")
RUN = hashlib.md5(str(time.time_ns()).encode(), usedforsecurity=False).hexdigest()[:8]
SCHEMA_PREFIX = f"hm_e2e_{RUN}_"
STREAM_PREFIX = f"E2E_{RUN}_"
SETTLE_SECONDS = 60.0
INGEST_PATHS = ("/v1/events", "/v1/track/", "/v1/sdk/")


def _digest(data: Path) -> str:
    return hashlib.md5(str(data).encode(), usedforsecurity=False).hexdigest()[:12]


def store_dsn(data: Path) -> str:
    return f"{POSTGRES}?schema={SCHEMA_PREFIX}{_digest(data)}"


def backend_env(data: Path | None) -> dict[str, str]:
    """The settings (as environment) that put a server of ``data`` on the shared engines."""
    if not POSTGRES or data is None:
        return {}
    env = {"HYPEMETER_STORE": store_dsn(data)}
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


class Workers:
    """Two ``hypemeter worker`` loops of one server, each in a thread of its own."""

    def __init__(self, settings: Settings, count: int = 2) -> None:
        self._settings = settings
        self._threads: list[tuple[threading.Thread, list[Any]]] = []
        for n in range(count):
            holder: list[Any] = []
            thread = threading.Thread(
                target=self._run, args=(holder,), name=f"e2e-worker-{n}", daemon=True
            )
            self._threads.append((thread, holder))

    def _run(self, holder: list[Any]) -> None:
        from hypemeter.worker import run_worker

        async def main() -> None:
            stopping = asyncio.Event()
            holder.append((asyncio.get_running_loop(), stopping))
            await run_worker(self._settings, stopping, signals=False)

        try:
            asyncio.run(main())
        except BaseException as exc:
            holder.append(exc)

    def start(self) -> Workers:
        for thread, _ in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for _, holder in self._threads:
            if holder and isinstance(holder[0], tuple):
                loop, stopping = holder[0]
                loop.call_soon_threadsafe(stopping.set)
        for thread, holder in self._threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "worker thread did not stop"
            errors = [h for h in holder if isinstance(h, BaseException)]
            if errors:
                raise errors[0]


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


def config_hooks(twin: Any) -> dict[str, list[Any]]:
    """httpx event hooks that, after a change of keys or custom metrics through the
    primary, wait until the twin has reloaded them (it hears of it over the bus)."""

    def before(request: httpx.Request) -> None:
        request.extensions["twin_reloads"] = twin.reloads

    def after(response: httpx.Response) -> None:
        request = response.request
        changes = request.method != "GET" and request.url.path.startswith("/v1/admin/")
        if changes and response.status_code < 300:
            deadline = time.monotonic() + SETTLE_SECONDS
            while twin.reloads <= request.extensions["twin_reloads"]:
                if time.monotonic() > deadline:
                    raise TimeoutError("the twin API instance did not reload its keys")
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
