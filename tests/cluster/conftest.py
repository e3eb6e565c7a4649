"""Fixtures of the cluster tests: private servers to kill, and deployments of real processes.

``private`` starts NATS, Redis or PostgreSQL servers of the test's own (see
``daemons``); ``deploy`` builds a ``Deployment`` on any backends and stops its
processes at teardown, dropping its schema and stream when they live on the
machine's shared services. The tests skip when a service or binary they need is
missing. On a failure, the tail of every log of the test's deployments is added
to the report.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .daemons import PG_BIN, NatsServer, PostgresServer, RedisServer, reachable
from .deployment import Backends, Deployment, Logged

SHARED_POSTGRES = os.environ.get(
    "HYPEMETER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
SHARED_NATS = os.environ.get("HYPEMETER_TEST_NATS", "nats://127.0.0.1:4222")
SHARED_REDIS = os.environ.get("HYPEMETER_TEST_REDIS", "redis://127.0.0.1:6379/0")
DEPLOYMENTS = pytest.StashKey[list[Deployment]]()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def shared_backends(*, bus: str = SHARED_REDIS) -> Backends:
    """A schema and a stream of their own on the shared PostgreSQL and NATS."""
    run = uuid.uuid4().hex[:10]
    return Backends(
        store=f"{SHARED_POSTGRES}?schema=hm_cluster_{run}",
        log=f"{SHARED_NATS}?stream=HM_CLUSTER_{run}",
        bus=bus,
        rate_limits=bus,
    )


def require_shared_services() -> None:
    for name, url in (
        ("PostgreSQL", SHARED_POSTGRES),
        ("NATS", SHARED_NATS),
        ("Redis", SHARED_REDIS),
    ):
        if not reachable(url):
            pytest.skip(f"{name} does not answer at {url}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if report.failed:
        for dep in item.stash.get(DEPLOYMENTS, []):
            report.sections.append((f"logs of {dep.root.name}", dep.logs(lines=60)))
    return report


@dataclass
class Private:
    """Servers of one test; every one started is stopped (and removed) at teardown."""

    root: Path
    started: list[NatsServer | RedisServer | PostgresServer] = field(default_factory=list)

    def nats(self) -> NatsServer:
        server = NatsServer(self.root)
        server.start()
        self.started.append(server)
        return server

    def redis(self) -> RedisServer:
        server = RedisServer(self.root)
        server.start()
        self.started.append(server)
        return server

    def postgres(self) -> PostgresServer:
        server = PostgresServer()
        self.started.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in reversed(self.started):
            if isinstance(server, PostgresServer):
                server.remove()
            else:
                server.stop()


@pytest.fixture
def private(tmp_path: Path) -> Iterator[Private]:
    missing = [b for b in ("nats-server", "redis-server") if shutil.which(b) is None]
    if not (PG_BIN / "pg_ctl").exists():
        missing.append(str(PG_BIN / "pg_ctl"))
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    if not reachable(SHARED_POSTGRES):
        pytest.skip(f"PostgreSQL does not answer at {SHARED_POSTGRES}")
    servers = Private(tmp_path / "services")
    yield servers
    servers.close()


DeployFactory = Callable[..., Deployment]


@pytest.fixture
def deploy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeployFactory]:
    """``deploy(backends, settings={...}, services=[...])``: a new, empty deployment."""
    made: list[Deployment] = []
    request.node.stash[DEPLOYMENTS] = made

    def factory(
        backends: Backends,
        *,
        settings: dict[str, str] | None = None,
        services: list[Logged] | None = None,
    ) -> Deployment:
        dep = Deployment(
            tmp_path / f"deployment-{len(made)}", backends, settings=settings, services=services
        )
        made.append(dep)
        return dep

    yield factory
    for dep in reversed(made):
        dep.close()
    for dep in made:
        dep.drop(
            schema=dep.backends.postgres == SHARED_POSTGRES,
            stream=dep.backends.nats == SHARED_NATS,
        )
