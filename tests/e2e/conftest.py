"""End-to-end fixtures: live servers (in-thread uvicorn, or ``hypemeter serve`` subprocesses)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import cluster
from .support import (
    SCRAPE_TOKEN,
    LiveServer,
    ServerFactory,
    ServerProcess,
    TenantKeys,
    run_coroutine,
    start_server,
)


@pytest.fixture(scope="session", autouse=True)
def drop_e2e_backends() -> Iterator[None]:
    """On PostgreSQL or the cluster, drop the schemas and streams this session made."""
    yield
    cluster.reap()
    run_coroutine(cluster.drop_all())


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory of live servers; every one started is stopped at teardown.

    ``make_server(**settings)`` uses a new data directory and provisions the
    tenants ``acme`` and ``globex`` with one key per scope. Pass ``data=`` and
    ``keys=`` of a stopped server to restart on the same data directory.
    """
    started: list[LiveServer] = []
    counter = iter(range(1000))

    def factory(*, keys: dict[str, TenantKeys] | None = None, **overrides: Any) -> LiveServer:
        data = overrides.pop("data", None) or tmp_path / f"d{next(counter)}"
        live = start_server(data, keys, **overrides)
        started.append(live)
        return live

    yield factory
    for live in reversed(started):
        live.stop()


@pytest.fixture
def server(make_server: ServerFactory) -> LiveServer:
    """A live server with default settings."""
    return make_server()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server for a whole module, for tests that must store nothing.

    It runs with ``metrics_token=SCRAPE_TOKEN`` so tests can check, through
    ``accepted_total``, that nothing was ever accepted.
    """
    live = start_server(tmp_path_factory.mktemp("shared"), metrics_token=SCRAPE_TOKEN)
    yield live
    live.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[Path], ServerProcess]]:
    """Start ``hypemeter serve`` subprocesses; any left running are killed at teardown."""
    procs: list[ServerProcess] = []

    def start(data: Path) -> ServerProcess:
        proc = ServerProcess(data, tmp_path / f"serve-{len(procs)}.log")
        procs.append(proc)
        return proc.wait_ready()

    yield start
    for proc in procs:
        if proc.proc.poll() is None:
            proc.kill()
        proc.stop_workers()
