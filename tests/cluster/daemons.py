"""Private NATS, Redis and PostgreSQL servers that a test may kill and restart.

Each one listens on a free port of 127.0.0.1 and keeps its data under a directory
of its own, so that killing it disturbs nothing else on the machine (the shared
services on the standard ports keep running). ``kill`` is a crash: SIGKILL for
NATS and Redis, ``pg_ctl stop -m immediate`` for PostgreSQL (every server process
quits without a shutdown checkpoint). ``start`` after ``kill`` or ``stop`` brings the
same server back on the same port with the same data directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

START_TIMEOUT = 30.0
PG_BIN = Path(os.environ.get("HYPEMETER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def reachable(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.port is not None and accepts(parsed.port, parsed.hostname or "127.0.0.1")


def wait_port(port: int, *, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not accepts(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} does not accept connections on port {port}")
        time.sleep(0.02)


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Daemon:
    """A server in the foreground of a subprocess: nats-server, redis-server."""

    name = "daemon"

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root / f"{self.name}-{self.port}"
        self.root.mkdir(parents=True)
        self.log_path = self.root / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        assert self._proc is None or self._proc.poll() is not None, f"{self.name} runs already"
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, what=self.name)
        except TimeoutError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        # The port must be free again before a restart can take it.
        deadline = time.monotonic() + 10
        while accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def logs(self, lines: int = 30) -> str:
        return f"--- {self.name} on port {self.port} ---\n{tail(self.log_path, lines)}"


class NatsServer(Daemon):
    """nats-server with JetStream, its store directory kept across restarts."""

    name = "nats"

    def argv(self) -> list[str]:
        store = self.root / "jetstream"
        return ["nats-server", "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(self.port)]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class RedisServer(Daemon):
    """redis-server without persistence: a restart comes back empty, as after a crash."""

    name = "redis"

    def argv(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb), run with pg_ctl.

    Its directory lives outside pytest's temporary tree, which only root may enter,
    and belongs to the user the server runs as.
    """

    name = "postgres"

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hm-cluster-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._run(
            PG_BIN / "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "fsync = off\n"  # a throwaway cluster: the tests crash processes, not the disk
            )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str | Path) -> None:
        done = subprocess.run(
            _as_postgres([str(a) for a in argv]), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}\n{done.stderr}")

    def _pg_ctl(self, *args: str) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), *args)

    def start(self) -> None:
        self._pg_ctl("-w", "-t", str(int(START_TIMEOUT)), "start")
        wait_port(self.port, what=self.name)

    def kill(self) -> None:
        """Immediate shutdown: every server process quits at once, as in a crash."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self, lines: int = 30) -> str:
        return f"--- postgres on port {self.port} ---\n{tail(self.log_path, lines)}"
