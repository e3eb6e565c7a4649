"""Start ``hypemeter serve`` on a fresh data directory, as a subprocess, for one run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.cluster import Cluster

HOST = "127.0.0.1"
TENANT = "bench"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Far above anything the benchmarks send: the limiter must never throttle them.
RATE_LIMIT = "1000000000/second"
SERIOUS = frozenset({"WARNING", "ERROR", "CRITICAL"})


def server_env() -> dict[str, str]:
    """This environment without any HYPEMETER_* variable, plus the benchmark settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPEMETER_")}
    env.update(
        HYPEMETER_LOG_LEVEL="warning",
        HYPEMETER_ACCESS_LOG="false",
        HYPEMETER_RATE_LIMIT=RATE_LIMIT,
        HYPEMETER_RATE_LIMIT_EVENTS=RATE_LIMIT,
        PYTHONUNBUFFERED="1",
    )
    return env


def hypemeter(*args: str, env: dict[str, str]) -> str:
    """Run one ``python -m hypemeter`` command; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "hypemeter", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"hypemeter {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(slots=True)
class Server:
    """A running server: where it listens, its ingest key, and what it logged."""

    port: int
    key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    problems: list[str] = field(default_factory=list)

    def _status(self, name: str) -> int:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in text.splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
        raise RuntimeError(f"{name} not in /proc/{self.process.pid}/status")

    def peak_rss_mb(self) -> float:
        """The high-water mark of resident memory (VmHWM) since the server started."""
        return self._status("VmHWM") / 1024


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"http://{HOST}:{port}/readyz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} at start-up")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the server was not ready within {READY_TIMEOUT_S:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def logged_problems(log_path: Path) -> list[str]:
    """Log records at WARNING or above; the server logs one JSON object per line."""
    problems: list[str] = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if line.strip():
                problems.append(line.strip())
            continue
        if isinstance(record, dict) and record.get("level") in SERIOUS:
            level, logger, message = (
                record.get("level"),
                record.get("logger"),
                record.get("message"),
            )
            problems.append(f"{level} {logger}: {message}")
    return problems


@contextlib.contextmanager
def running_server(cluster: Cluster | None = None, *, scopes: str = "ingest") -> Iterator[Server]:
    """A server on a new data directory with a tenant and a key of ``scopes``, removed afterwards.

    With ``cluster``, the server runs the cluster profile and its workers run beside it.
    After the block, ``Server.problems`` holds what the server logged at WARNING or above.
    """
    data = Path(tempfile.mkdtemp(prefix="hypemeter-bench-"))
    env = server_env()
    if cluster is not None:
        env.update(cluster.env())
    try:
        hypemeter("tenants", "create", TENANT, "--data", str(data), env=env)
        created = hypemeter(
            "keys", "create", "--tenant", TENANT, "--scopes", scopes, "--data", str(data), env=env
        )
        key = created.strip().splitlines()[-1]
        port = free_port()
        log_path = data / "server.log"
        with log_path.open("wb") as log:
            command = [sys.executable, "-m", "hypemeter", "serve"]
            process = subprocess.Popen(
                [*command, "--port", str(port), "--data", str(data)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(port, key, process, log_path)
        try:
            wait_ready(port, process)
            if cluster is not None:
                cluster.start_workers(env, data / "workers.log")
            yield server
        finally:
            stop(process)
            server.problems = logged_problems(log_path)
            if cluster is not None:
                cluster.remove()
                server.problems += logged_problems(data / "workers.log")
            if process.returncode not in (0, -signal.SIGTERM):
                server.problems.append(f"server exited with code {process.returncode}")
    finally:
        shutil.rmtree(data, ignore_errors=True)
