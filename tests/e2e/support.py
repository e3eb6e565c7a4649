"""End-to-end helpers: live servers spoken to over real HTTP, and the CLI.

``start_server(data, **settings)`` builds ``create_app(Settings(...))``, provisions
the tenants ``acme`` and ``globex`` with one key per scope through ``offline_auth``
*before* the server starts, and runs uvicorn in a background thread on a socket
bound to port 0. ``LiveServer.rows(sql)`` stops the server and reads its DuckDB
file read-only, so tests compare what the API answered with what was stored.
``ServerProcess`` and ``cli`` run ``python -m hypemeter`` as real subprocesses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx
import uvicorn

from hypemeter.app import create_app
from hypemeter.auth.model import parse_scopes
from hypemeter.control import offline_auth
from hypemeter.settings import Settings

from . import cluster

# duckdb 2.0 warns at every start of the embedded store (startup.restore_index
# calls to_arrow_reader on a DB-API result). The project turns warnings into errors,
# which would make the store fail to open inside a test process; this one warning,
# and only it, is ignored for the e2e tests (see the report on the finding).
HERE = Path(__file__).parent

TENANTS = ("acme", "globex")
SCOPES = ("ingest", "read", "admin")
STARTUP_TIMEOUT = 30.0
HYPEMETER = [sys.executable, "-m", "hypemeter"]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def recent_ts(minutes_ago: float = 1.0) -> str:
    return rfc3339(utc_now() - dt.timedelta(minutes=minutes_ago))


def new_id(prefix: str = "ev") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def event(**overrides: Any) -> dict[str, Any]:
    """A valid event with a unique event_id; ``overrides`` replace or add fields."""
    body: dict[str, Any] = {
        "event_id": new_id(),
        "influencer_id": "inf-1",
        "platform": "instagram",
        "content_id": "post-1",
        "metric": "likes",
        "value": 1,
        "ts": recent_ts(),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class TenantKeys:
    """Secrets and ids of one tenant's keys, one per scope."""

    secrets: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def ingest(self) -> str:
        return self.secrets["ingest"]

    @property
    def read(self) -> str:
        return self.secrets["read"]

    @property
    def admin(self) -> str:
        return self.secrets["admin"]


async def provision(settings: Settings) -> dict[str, TenantKeys]:
    out: dict[str, TenantKeys] = {}
    async with offline_auth(settings) as auth:
        for tenant in TENANTS:
            await auth.ensure_tenant(tenant)  # an import may have made it
            keys = TenantKeys()
            for scope in SCOPES:
                new = await auth.create_key(tenant, parse_scopes(scope), name=f"{tenant}-{scope}")
                keys.secrets[scope] = new.secret
                keys.ids[scope] = new.record.key_id
            out[tenant] = keys
    return out


def run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh loop in a helper thread.

    Works whether or not the calling thread already runs an event loop.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def stored_rows(data: Path, sql: str) -> list[tuple[Any, ...]]:
    """Query the store of a stopped server's data directory: its DuckDB file, read-only,
    or its PostgreSQL schema."""
    if cluster.POSTGRES:
        if cluster.CLUSTER:
            cluster.settle(Settings(data=data, **cluster.backend_overrides(data)))
        return run_coroutine(_postgres_rows(cluster.store_dsn(data), sql, []))
    con = duckdb.connect(str(data / "hypemeter.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def _postgres_rows(dsn: str, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    import asyncpg

    base, _, schema = dsn.partition("?schema=")
    numbered = iter(range(1, len(params) + 1))
    sql = re.sub(r"\?", lambda _: f"${next(numbered)}", sql.replace("epoch_us(ts)", "ts_us"))
    con = await asyncpg.connect(base, server_settings={"search_path": schema})
    try:
        return [tuple(row) for row in await con.fetch(sql, *params)]
    finally:
        await con.close()


class LiveServer:
    """One app served by uvicorn in a background thread.

    On the cluster profile the rest of the topology runs beside it as subprocesses
    (``cluster.Processes``): a second API process (the twin), to which clients send
    half of their queries, and two workers.
    """

    def __init__(self, settings: Settings, keys: dict[str, TenantKeys]) -> None:
        self.settings = settings
        self.twin: cluster.Processes | None = None
        self.keys = keys
        self.app = create_app(settings)
        # proto=IPPROTO_TCP lets the event loop set TCP_NODELAY on accepted connections.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Port 0 (any free one) unless the settings name one (e.g. for a public URL).
        self._sock.bind(("127.0.0.1", settings.port if "port" in settings.model_fields_set else 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            loop="uvloop",  # as `hypemeter serve` runs
            http="httptools",
            ws="websockets-sansio",
            ws_per_message_deflate=False,  # as `hypemeter serve` runs
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        self._server = uvicorn.Server(config)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="e2e-uvicorn", daemon=True)
        self.running = False

    @property
    def data(self) -> Path:
        return self.settings.data

    @property
    def db_path(self) -> Path:
        return self.settings.data / "hypemeter.duckdb"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def start(self) -> LiveServer:
        if self.settings.log:
            logs = self.settings.data.parent / f"{self.settings.data.name}-processes"
            logs.mkdir(parents=True, exist_ok=True)
            self.twin = cluster.Processes(self.settings, logs)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server thread died during startup: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.01)
        if self.twin is not None:
            self.twin.wait_ready(STARTUP_TIMEOUT)
        self.running = True
        return self

    def stop(self) -> None:
        twin, self.twin = self.twin, None
        if twin is not None:
            twin.terminate()  # they stop while the primary does
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=60)
        self._sock.close()
        self.running = False
        if twin is not None:
            twin.stop()
        assert not self._thread.is_alive(), "server thread did not stop"
        if self._error is not None:
            raise self._error

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers.update(bearer(key))
        hooks = cluster.settling_hooks(self.settings)
        if self.twin is not None:
            hooks = cluster.merge_hooks(hooks, cluster.config_hooks(self.twin))
            kwargs.setdefault("transport", cluster.Alternating(self.twin.port))
        kwargs.setdefault("event_hooks", hooks)
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)

    def post_events(
        self,
        key: str | None,
        events: Any,
        *,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a JSON array (or any JSON value) to /v1/events."""
        with self.client(key) as client:
            return client.post("/v1/events", json=events, headers=headers or {})

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Stop the server, then query its store: the DuckDB file, read-only, or its
        PostgreSQL schema (``?`` parameters and ``epoch_us(ts)`` translated). On the
        cluster, the workers first commit what the log holds."""
        if self.settings.log and self.running:
            cluster.settle(self.settings)
        self.stop()
        if self.settings.store.startswith("postgresql"):
            return run_coroutine(_postgres_rows(self.settings.store, sql, params or []))
        con = duckdb.connect(str(self.db_path), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def stored_count(self, tenant: str) -> int:
        return int(self.rows("SELECT count(*) FROM events WHERE tenant_id = ?", [tenant])[0][0])


ServerFactory = Callable[..., LiveServer]
SCRAPE_TOKEN = "e2e-scrape-token"


def start_server(
    data: Path, keys: dict[str, TenantKeys] | None = None, **overrides: Any
) -> LiveServer:
    """Provision (unless ``keys`` are given) and start a live server on ``data``."""
    overrides.setdefault("access_log", False)
    overrides.setdefault("log_level", "warning")
    for name, value in cluster.backend_overrides(data).items():
        overrides.setdefault(name, value)  # the PostgreSQL or cluster runs of the suites
    settings = Settings(data=data, **overrides)
    if keys is None:
        keys = run_coroutine(provision(settings))
    return LiveServer(settings, keys).start()


def accepted_total(srv: LiveServer) -> float:
    """Events the server accepted so far, all tenants, read through /metrics.

    The server must run with ``metrics_token=SCRAPE_TOKEN``.
    """
    with srv.client(SCRAPE_TOKEN) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith("hypemeter_events_accepted_total{")
    )


# -- subprocesses -----------------------------------------------------------


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("HYPEMETER_"):
            del env[name]
    env["HYPEMETER_ACCESS_LOG"] = "false"
    env["HYPEMETER_LOG_LEVEL"] = "warning"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(
    *args: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``hypemeter ARGS`` in a subprocess and capture its output."""
    data = args[args.index("--data") + 1] if "--data" in args[:-1] else None
    done = subprocess.run(
        [*HYPEMETER, *args],
        capture_output=True,
        text=True,
        env={
            **cli_env(),
            **cluster.backend_env(None if data is None else Path(data)),
            **(env or {}),
        },
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"hypemeter {' '.join(args)} exited {done.returncode}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
    return done


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``hypemeter serve`` as a subprocess; its stderr goes to a log file."""

    def __init__(self, data: Path, log: Path, *, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [*HYPEMETER, "serve", "--port", str(self.port), "--data", str(data)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={
                **cli_env(),
                **cluster.backend_env(data),
                "HYPEMETER_LOG_LEVEL": "info",
                **(env or {}),
            },
        )
        self.log_path = log
        # On the cluster profile, the server's events reach the store through workers.
        self.workers = [
            subprocess.Popen(
                [*HYPEMETER, "worker"],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={**cli_env(), **cluster.backend_env(data), **(env or {})},
            )
            for _ in range(2 if cluster.CLUSTER else 0)
        ]

    def stop_workers(self) -> None:
        if self.workers:
            cluster.settle(Settings(data=self.data, **cluster.backend_overrides(self.data)))
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready:\n{self.log_path.read_text()}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM the server, then its workers (which commit what it acknowledged)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.stop_workers()
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> int:
        """SIGKILL the server alone: its workers go on (``stop_workers`` ends them)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=30)
        self._log.close()  # the workers write through their own descriptors
        return code


KEY_LINE = re.compile(r"^hm_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}$")
CREATED = re.compile(
    r"^key (?P<id>[0-9a-f]{12}) for tenant (?P<tenant>\S+) with scopes (?P<s>\S+)$"
)


def create_key(data: Path, tenant: str, scopes: str, name: str = "") -> tuple[str, str]:
    """``hypemeter keys create``; returns (key id, secret) and checks the output contract."""
    args = ["keys", "create", "--tenant", tenant, "--scopes", scopes, "--data", str(data)]
    if name:
        args += ["--name", name]
    done = cli(*args)
    lines = done.stdout.strip().splitlines()
    secret = lines[-1]
    assert KEY_LINE.match(secret), done.stdout
    assert secret not in "\n".join(lines[:-1]), "the key is shown once, alone on the last line"
    header = CREATED.match(lines[0])
    assert header, done.stdout
    assert header["tenant"] == tenant
    assert header["s"] == ",".join(sorted(scopes.split(",")))
    assert secret.startswith(f"hm_{header['id']}_")
    return header["id"], secret


def list_keys(data: Path, *extra: str) -> dict[str, list[str]]:
    """``hypemeter keys list`` as {id: [tenant, scopes, state, name]}."""
    done = cli("keys", "list", "--data", str(data), *extra)
    rows = [line.split("\t") for line in done.stdout.splitlines() if line.strip()]
    return {row[0]: row[1:] for row in rows}
