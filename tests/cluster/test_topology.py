"""Two API processes and two workers on the machine's PostgreSQL, NATS and Redis.

One deployment (``hypemeter serve --profile cluster`` twice, ``hypemeter worker``
twice, each a subprocess) serves the module, in a schema and a stream of its own
and under a tenant name of its own: the live bus names its channels after the Redis
database only (see the last test), so a unique tenant keeps other deployments on
the same database out of the tests' channels. Periodic reloads of keys are set to
an hour, so that only the bus notices can carry a key change between the API
processes within the tests' waits. The per-key rate limit test runs on a deployment
of its own, whose limit is six requests a minute.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from e2e.support import bearer
from e2e.test_live import day_range

from .conftest import (
    DEPLOYMENTS,
    SHARED_REDIS,
    DeployFactory,
    require_shared_services,
    shared_backends,
    unique,
)
from .deployment import Api, Deployment, Key
from .traffic import (
    METRICS,
    LiveClient,
    aggregate,
    eventually,
    influencer_totals,
    live_client,
    make_events,
    sums,
)

SETTINGS = {"CONFIG_REFRESH_SECONDS": "3600", "LIVE_COALESCE_MS": "0"}
PROPAGATION = 10.0  # seconds a change may take to reach the other process


@dataclass
class Topology:
    dep: Deployment
    tenant: str
    key: Key  # ingest, read and admin
    apis: list[Api]

    def post(self, api: Api, events: list[dict[str, Any]]) -> dict[str, Any]:
        response = httpx.post(
            f"{api.url}/v1/events", json=events, headers=bearer(self.key.secret), timeout=30.0
        )
        assert response.status_code == 200, f"{api.name}: {response.text}\n{self.dep.logs()}"
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def module_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    require_shared_services()
    dep = Deployment(tmp_path_factory.mktemp("topology"), shared_backends(), settings=SETTINGS)
    try:
        dep.migrate()
        tenant = unique("t-")
        key = dep.provision(tenant)
        apis = [dep.start_api(), dep.start_api()]
        dep.start_worker()
        dep.start_worker()
        dep.wait_ready()
        yield Topology(dep, tenant, key, apis)
    finally:
        dep.close()
        dep.drop(schema=True, stream=True)


@pytest.fixture
def topology(request: pytest.FixtureRequest, module_topology: Topology) -> Topology:
    request.node.stash[DEPLOYMENTS] = [module_topology.dep]  # logs on failure
    return module_topology


def test_events_posted_to_both_apis_count_once_and_both_answer_the_truth(
    topology: Topology,
) -> None:
    dep, (api1, api2) = topology.dep, topology.apis
    rng = random.Random(7)
    campaign = unique("camp-")
    influencers = [unique("inf-") for _ in range(4)]

    def batch(count: int) -> list[dict[str, Any]]:
        return make_events(count, influencers=influencers, campaign=campaign, rng=rng)

    first = batch(40)
    assert topology.post(api1, first) == {"accepted": 40, "duplicates": 0, "rejected": []}
    # The client never saw the answer and retries at once, on API 1, then on API 2:
    # JetStream's duplicate window (or the store) knows every event.
    assert topology.post(api1, first) == {"accepted": 0, "duplicates": 40, "rejected": []}
    assert topology.post(api2, first) == {"accepted": 0, "duplicates": 40, "rejected": []}

    # The same new events to both processes at the same moment: one copy is accepted.
    second = batch(40)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda api: topology.post(api, second), (api1, api2)))
    assert sum(a["accepted"] for a in answers) == 40, answers
    assert sum(a["duplicates"] for a in answers) == 40, answers

    # Overlapping but different batches at once: copies still in the log are answered
    # as accepted by both, and the workers drop the second copy.
    third = batch(30)
    mixed = first[:10] + third[:10] + batch(10)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(topology.post, (api1, api2), (third, mixed)))
    for answer, sent in zip(answers, (third, mixed), strict=True):
        assert answer["accepted"] + answer["duplicates"] == len(sent), answer
        assert answer["rejected"] == []

    dep.settle()
    # A retry long after the commit is answered from the store's id index.
    assert topology.post(api2, mixed) == {"accepted": 0, "duplicates": 30, "rejected": []}
    dep.settle()

    unique_events = {e["event_id"]: e for e in first + second + third + mixed}
    assert len(unique_events) == 120
    events = list(unique_events.values())
    stored = dep.rows(
        "SELECT count(*), count(DISTINCT event_id) FROM events "
        "WHERE tenant_id = $1 AND campaign_id = $2",
        topology.tenant,
        campaign,
    )
    assert stored == [(120, 120)], dep.logs()
    stored_values = dep.rows(
        "SELECT event_id, value FROM events WHERE tenant_id = $1 AND campaign_id = $2",
        topology.tenant,
        campaign,
    )
    assert dict(stored_values) == {e: float(v["value"]) for e, v in unique_events.items()}

    for metric in METRICS:
        by_influencer = sums(events, "influencer_id", metric)
        by_platform = sums(events, "platform", metric)
        for api in (api1, api2):
            key = topology.key.secret
            assert aggregate(api, key, metric, "influencer", campaign) == by_influencer, api.name
            assert aggregate(api, key, metric, "platform", campaign) == by_platform, api.name
    for influencer in influencers:
        want = {m: sums(events, "influencer_id", m).get(influencer, 0) for m in METRICS}
        assert influencer_totals(api1, topology.key.secret, influencer) == want
        assert influencer_totals(api2, topology.key.secret, influencer) == want


def test_a_subscriber_on_api_2_gets_updates_of_events_posted_to_api_1(
    topology: Topology,
) -> None:
    api1, api2 = topology.apis
    rng = random.Random(11)
    influencer, campaign = unique("inf-"), unique("camp-")
    with live_client(api2, topology.key.secret) as live:
        assert live.subscribe("s", {"influencer_id": influencer}) == {"likes": 0, "comments": 0}
        sent: list[dict[str, Any]] = []
        for count in (25, 3):
            events = make_events(count, influencers=[influencer], campaign=campaign, rng=rng)
            assert topology.post(api1, events)["accepted"] == count
            sent += events
            want = {m: sums(sent, "influencer_id", m).get(influencer, 0) for m in METRICS}
            assert live.reaches("s", want, PROPAGATION), (
                f"live totals {live.totals.get('s')}, expected {want}\n{topology.dep.logs()}"
            )
        assert influencer_totals(api2, topology.key.secret, influencer) == want


def probe(api: Api, secret: str) -> int:
    """The status of a read request with ``secret``."""
    return httpx.get(
        f"{api.url}/v1/influencers/inf-probe/metrics",
        params=day_range(),
        headers=bearer(secret),
        timeout=10.0,
    ).status_code


def test_keys_created_and_revoked_on_one_api_take_effect_on_the_other(
    topology: Topology,
) -> None:
    api1, api2 = topology.apis
    admin = bearer(topology.key.secret)
    created = httpx.post(
        f"{api1.url}/v1/admin/keys",
        json={"scopes": ["read"], "name": "rotating"},
        headers=admin,
        timeout=10.0,
    )
    assert created.status_code == 201, created.text
    key_id, secret = created.json()["id"], created.json()["key"]
    assert probe(api1, secret) == 200
    assert eventually(lambda: probe(api2, secret) == 200, PROPAGATION), topology.dep.logs()

    revoked = httpx.delete(f"{api1.url}/v1/admin/keys/{key_id}", headers=admin, timeout=10.0)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] is True
    assert probe(api1, secret) == 401  # at once, on the process that revoked it
    assert eventually(lambda: probe(api2, secret) == 401, PROPAGATION), topology.dep.logs()

    # The CLI, with no server on its data directory, changes the store and tells the
    # running processes over the bus.
    cli_key = topology.dep.create_key(topology.tenant, "read")
    for api in (api1, api2):
        assert eventually(lambda api=api: probe(api, cli_key.secret) == 200, PROPAGATION)
    topology.dep.cli("keys", "revoke", cli_key.id)
    for api in (api1, api2):
        assert eventually(lambda api=api: probe(api, cli_key.secret) == 401, PROPAGATION)


def test_the_per_key_rate_limit_is_one_budget_across_api_processes(
    deploy: DeployFactory,
) -> None:
    require_shared_services()
    dep = deploy(shared_backends(), settings={"RATE_LIMIT": "6/minute"})
    dep.migrate()
    tenant = unique("t-")
    key = dep.provision(tenant, "read,admin")
    apis = [dep.start_api(), dep.start_api()]
    dep.wait_ready()

    answers = []
    for n in range(8):
        api = apis[n % 2]
        response = httpx.get(
            f"{api.url}/v1/influencers/inf-1/metrics",
            params=day_range(),
            headers=bearer(key.secret),
            timeout=10.0,
        )
        answers.append(response)
    assert [r.status_code for r in answers] == [200] * 6 + [429] * 2, [r.text for r in answers]
    assert [r.headers["ratelimit-remaining"] for r in answers[:6]] == ["5", "4", "3", "2", "1", "0"]
    for refused in answers[6:]:
        assert 1 <= int(refused.headers["retry-after"]) <= 60, refused.headers
        assert refused.headers["ratelimit-limit"] == "6"
        assert refused.json()["error"]["code"] == "rate_limited"

    # Another key of the same tenant has a budget of its own; unknown keys (401) cost none.
    other = dep.create_key(tenant, "read")
    remaining = []
    for api in apis:
        assert eventually(lambda api=api: probe(api, other.secret) != 401, PROPAGATION)
        remaining.append(answers_of(api, other.secret).headers["ratelimit-remaining"])
    assert remaining == ["4", "2"]  # each probe that got in took one too


def answers_of(api: Api, secret: str) -> httpx.Response:
    response = httpx.get(
        f"{api.url}/v1/influencers/inf-1/metrics",
        params=day_range(),
        headers=bearer(secret),
        timeout=10.0,
    )
    assert response.status_code == 200, response.text
    return response


def test_deployments_on_different_redis_databases_keep_their_live_events_apart(
    topology: Topology, deploy: DeployFactory
) -> None:
    """Redis pub/sub ignores databases: the bus must keep the deployments apart itself."""
    other = deploy(shared_backends(bus=SHARED_REDIS.rsplit("/", 1)[0] + "/1"), settings=SETTINGS)
    other.migrate()
    other_key = other.provision(topology.tenant, "ingest")  # the same tenant name, elsewhere
    other_api = other.start_api()
    other.start_worker()
    other.wait_ready()
    influencer, campaign = unique("inf-"), unique("camp-")
    rng = random.Random(3)
    with live_client(topology.apis[1], topology.key.secret) as live:
        live.tail("tail", {"influencer_id": influencer})

        def post_ours() -> set[str]:
            """Post to this deployment and read until the tail has the events; their ids."""
            events = make_events(5, influencers=[influencer], campaign=campaign, rng=rng)
            topology.post(topology.apis[0], events)
            ids = {e["event_id"] for e in events}
            assert live.wait(lambda _: ids <= tailed(live), PROPAGATION), live.events["tail"]
            return ids

        ours = post_ours()  # the tail's channel is subscribed in Redis by now
        theirs = make_events(5, influencers=[influencer], campaign=campaign, rng=rng)
        response = httpx.post(
            f"{other_api.url}/v1/events",
            json=theirs,
            headers=bearer(other_key.secret),
            timeout=30.0,
        )
        assert response.status_code == 200, response.text
        other.settle()  # its worker published the commit's change set
        ours |= post_ours()
        live.wait(lambda _: False, 0.5)  # anything else in flight
        leaked = tailed(live) & {e["event_id"] for e in theirs}
        assert not leaked, f"a tail of this deployment received {len(leaked)} foreign events"
        assert tailed(live) == ours


def tailed(live: LiveClient) -> set[str]:
    return {e["event_id"] for e in live.events["tail"]}
