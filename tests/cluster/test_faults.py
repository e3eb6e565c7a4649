"""Faults of the cluster: a worker, NATS, Redis or PostgreSQL connections die under load.

Each test runs its own NATS and Redis servers (and, for the PostgreSQL test, its own
PostgreSQL cluster) on free ports, so that it can kill them, plus an API process
and two workers as subprocesses. A steady load posts batches and retries each one
(same event ids) until it is acknowledged; the ledger records every answer. After
recovery, ``check_exactly_once`` compares the store with the ledger: every
acknowledged event stored once, nothing else, and the query API equal to
brute-force sums. Every refused request must have been a 503 or a 429 with
Retry-After, never a 500 and never left unanswered.

The workers' consumers get a 5 s ack wait (``Deployment.shorten_ack_wait``) so
that a message held by a killed worker comes back within the test's time.

Two tests cover the live hub after an outage: a quiet tenant's live totals catch up
once Redis is back, and a live snapshot refused while PostgreSQL is down works once
it is back.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from e2e.support import bearer
from e2e.test_live import day_range

from .conftest import SHARED_POSTGRES, DeployFactory, Private, unique
from .deployment import Api, Backends, Deployment, Key, Logged, run
from .traffic import (
    METRICS,
    Ledger,
    Sender,
    SteadyLoad,
    check_exactly_once,
    eventually,
    live_client,
    make_events,
    query,
    subscription,
    sums,
)

ACK_WAIT = 5.0
BATCH = 500
INFLUENCERS = 8
PROGRESS = 60.0  # seconds the load may take to get further after a fault
OUTAGE = 20.0
RESYNC = 5.0  # seconds a fresh snapshot may take once the bus is back


@dataclass
class Rig:
    """One deployment under test, the tenant it ingests for and the ledger of its load."""

    dep: Deployment
    tenant: str
    key: Key
    api: Api
    campaign: str
    ledger: Ledger
    sender: Sender
    rng: random.Random

    def batch(self, count: int = BATCH) -> list[dict[str, object]]:
        influencers = [f"{self.campaign}-inf-{n}" for n in range(INFLUENCERS)]
        return make_events(count, influencers=influencers, campaign=self.campaign, rng=self.rng)

    def load(self, *, pause: float = 0.05) -> SteadyLoad:
        return SteadyLoad(self.sender, self.batch, pause=pause)

    def wait_batches(self, count: int) -> None:
        """Until ``count`` batches in all were acknowledged."""
        assert eventually(lambda: self.ledger.batches >= count, PROGRESS), (
            f"{self.ledger.summary()}\n{self.dep.logs()}"
        )

    def check(self) -> None:
        check_exactly_once(
            self.dep, self.tenant, self.campaign, self.ledger, self.api, self.key.secret
        )

    def truth(self) -> dict[str, int]:
        """Brute-force totals of the campaign over the acknowledged events."""
        acked = [self.ledger.sent[e] for e in self.ledger.acked]
        return {m: sums(acked, "campaign_id", m).get(self.campaign, 0) for m in METRICS}

    def campaign_totals(self) -> dict[str, int]:
        """Today's totals of the campaign through the query API."""
        body = query(
            self.api,
            self.key.secret,
            f"/v1/campaigns/{self.campaign}/metrics",
            metrics=",".join(METRICS),
            granularity="day",
            **day_range(),
        )
        totals: dict[str, int] = body["totals"]
        return totals


RigFactory = Callable[..., Rig]


@pytest.fixture
def rig(deploy: DeployFactory) -> Iterator[RigFactory]:
    """``rig(backends, services, settings=..., victim=...)``: migrate, provision, start an
    API and two workers (the first one named ``victim`` in pg_stat_activity, if given)."""
    senders: list[Sender] = []

    def factory(
        backends: Backends,
        services: list[Logged],
        *,
        settings: dict[str, str] | None = None,
        victim: str | None = None,
    ) -> Rig:
        dep = deploy(backends, settings=settings, services=services)
        dep.migrate()
        tenant = unique("t-")
        key = dep.provision(tenant)
        api = dep.start_api()
        first = {"STORE": f"{backends.store}&application_name={victim}"} if victim else {}
        dep.start_worker(**first)
        dep.start_worker()
        dep.wait_ready()
        dep.shorten_ack_wait(ACK_WAIT)
        ledger = Ledger()
        senders.append(Sender([api], key.secret, ledger))
        campaign = unique("camp-")
        return Rig(dep, tenant, key, api, campaign, ledger, senders[-1], random.Random(tenant))

    yield factory
    for sender in senders:
        sender.close()


def probe(api: Api, secret: str) -> int:
    return httpx.get(
        f"{api.url}/v1/influencers/inf-probe/metrics", headers=bearer(secret), timeout=10.0
    ).status_code


def readiness(api: Api) -> tuple[int, dict[str, str], str | None]:
    """``/readyz``: its status, its body and its Retry-After."""
    response = httpx.get(f"{api.url}/readyz", timeout=30.0)
    return response.status_code, response.json(), response.headers.get("retry-after")


def ready(api: Api) -> bool:
    return readiness(api)[0] == 200


def shared_store() -> str:
    return f"{SHARED_POSTGRES}?schema={unique('hm_cluster_')}"


async def kill_in_transaction(dsn: str, application: str, pid: int, within: float) -> bool:
    """SIGKILL ``pid`` as soon as its connection ``application`` is inside a transaction
    that has written (an xid is assigned): a commit of events half done."""
    con = await asyncpg.connect(dsn, timeout=10)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            writing = await con.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = $1 AND backend_xid IS NOT NULL",
                application,
            )
            if writing:
                os.kill(pid, signal.SIGKILL)
                return True
            await asyncio.sleep(0.002)
        return False
    finally:
        await con.close()


def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(
    private: Private, rig: RigFactory
) -> None:
    nats, redis = private.nats(), private.redis()
    backends = Backends(shared_store(), f"{nats.url}?stream=EVENTS", redis.url, redis.url)
    r = rig(backends, [nats, redis], victim="hm-victim")
    victim = r.dep.workers[0]
    with r.load():
        r.wait_batches(2)
        killed = run(kill_in_transaction(SHARED_POSTGRES, "hm-victim", victim.pid, PROGRESS))
        assert killed, f"the victim never wrote\n{r.dep.logs()}"
        assert victim.proc.wait(timeout=10) == -signal.SIGKILL
        r.dep.start_worker()
        r.wait_batches(r.ledger.batches + 4)
    r.check()


def test_nats_killed_and_restarted_under_load_loses_and_doubles_nothing(
    private: Private, rig: RigFactory
) -> None:
    nats, redis = private.nats(), private.redis()
    backends = Backends(shared_store(), f"{nats.url}?stream=EVENTS", redis.url, redis.url)
    r = rig(backends, [nats, redis])
    with r.load():
        r.wait_batches(3)
        nats.kill()
        # The load meets the outage until ingest refuses a request (its publish times
        # out) or for OUTAGE seconds at most.
        eventually(lambda: r.ledger.refusals[503] > 0, OUTAGE)
        nats.start()
        r.wait_batches(r.ledger.batches + 4)
    assert r.ledger.refusals[503] > 0, f"ingest never refused while NATS was down\n{r.dep.logs()}"
    r.check()


def test_live_totals_catch_up_after_redis_restarts(private: Private, rig: RigFactory) -> None:
    nats, redis = private.nats(), private.redis()
    backends = Backends(shared_store(), f"{nats.url}?stream=EVENTS", redis.url, redis.url)
    settings = {"LIVE_COALESCE_MS": "0", "CONFIG_REFRESH_SECONDS": "3600"}
    r = rig(backends, [nats, redis], settings=settings)

    with live_client(r.api, r.key.secret) as live:
        assert live.subscribe("c", {"campaign_id": r.campaign}) == {"likes": 0, "comments": 0}
        for _ in range(3):
            r.sender.post(r.batch(200))
        assert live.reaches("c", r.truth(), 20.0), f"{live.totals}\n{r.dep.logs()}"

        with r.load(pause=0.2):
            redis.kill()
            live.wait(lambda _: False, 1.0)  # keep reading while Redis is down
            status, body, retry_after = readiness(r.api)
            assert (status, body["bus"] != "ok", retry_after) == (503, True, "5"), body
            redis.start()
            live.wait(lambda _: False, 1.0)
        # Every batch is acknowledged now. New events reach the subscriber, and its
        # totals come back to the truth (the hub resyncs with a fresh snapshot).
        deadline = time.monotonic() + PROGRESS
        while not live.reaches("c", r.truth(), 2.0):
            assert time.monotonic() < deadline, (
                f"live totals {live.totals['c']}, truth {r.truth()}\n"
                f"{r.ledger.summary()}\n{r.dep.logs()}"
            )
            r.sender.post(r.batch(5))
    # Rate limits count in the same Redis: while it was down, ingest answered 503.
    assert r.ledger.refusals[503] > 0, r.ledger.summary()
    r.check()
    assert r.campaign_totals() == r.truth() == live.totals["c"]
    # Shared configuration travels over the bus again: a key made by the CLI works.
    key = r.dep.create_key(r.tenant, "read")
    assert eventually(lambda: probe(r.api, key.secret) == 200, 10.0), r.dep.logs()


def test_live_totals_of_a_quiet_tenant_catch_up_after_redis_restarts(
    private: Private, rig: RigFactory
) -> None:
    nats, redis = private.nats(), private.redis()
    # Rate limits in memory: ingest does not need Redis, only live push does.
    backends = Backends(shared_store(), f"{nats.url}?stream=EVENTS", redis.url, "memory://")
    r = rig(backends, [nats, redis], settings={"LIVE_COALESCE_MS": "0"})
    api_log = r.dep.apis[0].log_path

    with live_client(r.api, r.key.secret) as live:
        live.subscribe("c", {"campaign_id": r.campaign})
        r.sender.post(r.batch(100))
        assert live.reaches("c", r.truth(), 20.0), f"{live.totals}\n{r.dep.logs()}"
        redis.kill()
        for _ in range(2):  # committed while the bus is down: their change sets are lost
            r.sender.post(r.batch(100))
        r.dep.settle()
        redis.start()
        assert eventually(lambda: "live bus reconnected" in api_log.read_text(), PROGRESS)
        assert r.campaign_totals() == r.truth()  # the store and the query API are right
        # No more events: the subscriber must still come back to the truth.
        assert live.reaches("c", r.truth(), RESYNC), (
            f"live totals {live.totals['c']}, truth {r.truth()}\n{r.dep.logs()}"
        )


def test_a_live_subscription_refused_while_postgres_is_down_works_once_it_is_back(
    private: Private, rig: RigFactory
) -> None:
    postgres, nats, redis = private.postgres(), private.nats(), private.redis()
    backends = Backends(
        f"{postgres.url}?schema=hm", f"{nats.url}?stream=EVENTS", redis.url, redis.url
    )
    r = rig(backends, [postgres, nats, redis])
    r.sender.post(r.batch(50))
    r.dep.settle()
    live_filter = {"campaign_id": r.campaign}
    with live_client(r.api, r.key.secret) as live:
        postgres.kill()
        refused = live.ask(subscription("during", live_filter))
        assert refused["type"] == "error", refused
        postgres.start()
        assert eventually(lambda: ready(r.api), PROGRESS), r.dep.logs()
        answer = live.ask(subscription("after", live_filter))
        assert answer["type"] == "snapshot", f"{answer}\n{r.dep.logs()}"
        assert answer["totals"] == r.truth()


async def terminate_backends(dsn: str) -> int:
    """Terminate every other connection to the database; how many there were."""
    con = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(
            await con.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await con.close()


def test_postgres_connections_dropped_under_load_lose_and_double_nothing(
    private: Private, rig: RigFactory
) -> None:
    postgres, nats, redis = private.postgres(), private.nats(), private.redis()
    backends = Backends(
        f"{postgres.url}?schema=hm", f"{nats.url}?stream=EVENTS", redis.url, redis.url
    )
    r = rig(backends, [postgres, nats, redis])
    rounds = []
    with r.load(pause=0.3):
        r.wait_batches(2)
        for _ in range(10):
            rounds.append(run(terminate_backends(postgres.url)))
            time.sleep(0.3)
        r.wait_batches(r.ledger.batches + 3)
    assert sum(1 for n in rounds if n) >= 5, f"connections terminated per round: {rounds}"
    r.check()
