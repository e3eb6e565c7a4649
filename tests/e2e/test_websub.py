"""YouTube push: the server subscribes each channel's feed at the hub and renews the lease."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx

from .fake_hub import FakeHub
from .support import LiveServer, ServerFactory, free_port

TOPIC = "https://www.youtube.com/xml/feeds/videos.xml?channel_id={}"


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


def youtube_server(make_server: ServerFactory, hub: FakeHub, lease_s: int) -> LiveServer:
    port = free_port()
    return make_server(
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        youtube_hub_url=hub.url,
        websub_lease_seconds=lease_s,
    )


def register(srv: LiveServer, influencer: str, channel: str) -> None:
    body = {
        "id": influencer,
        "name": influencer,
        "accounts": [{"platform": "youtube", "account_id": channel}],
    }
    with srv.client(srv.keys["acme"].admin) as client:
        assert client.post("/v1/influencers", json=body).status_code == 201


def connector(srv: LiveServer) -> dict[str, Any]:
    with srv.client(srv.keys["acme"].admin) as client:
        created = client.post(
            "/v1/admin/connectors", json={"platform": "youtube", "secrets": {"hub_secret": "hs"}}
        )
    assert created.status_code == 201, created.text
    answer: dict[str, Any] = created.json()
    return answer


def test_each_channel_is_subscribed_verified_and_renewed(make_server: ServerFactory) -> None:
    hub = FakeHub().start()
    try:
        srv = youtube_server(make_server, hub, lease_s=2)
        register(srv, "ana", "UC-ana")
        register(srv, "ben", "UC-ben")
        made = connector(srv)
        callback = srv.url + made["callback_url"]

        def subscriptions(topic: str) -> list[Any]:
            return [s for s in hub.seen() if s.topic == topic]

        first = wait_for(lambda: subscriptions(TOPIC.format("UC-ana")))[0]
        assert first.callback == callback
        assert first.lease_seconds == 2
        assert first.secret == "hs"
        wait_for(lambda: first.verified is not None)
        assert first.verified is True  # the challenge came back exactly
        assert subscriptions(TOPIC.format("UC-ben"))
        # Renewed at 80% of the lease, so it never lapses: 1.6 s, then again.
        renewed = wait_for(lambda: len(subscriptions(TOPIC.format("UC-ana"))) >= 3, timeout=10)
        assert renewed
        times = [s.at for s in subscriptions(TOPIC.format("UC-ana"))]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(1.4 <= gap <= 2.5 for gap in gaps[:2]), gaps  # 1.6 s and a round (0.5 s)
        with srv.client(srv.keys["acme"].admin) as client:
            listed = client.get("/v1/admin/connectors").json()["data"][0]
        assert listed["polling"]["websub"]["topics"] == 2
        assert listed["polling"]["websub"]["confirmed"] == 2
    finally:
        hub.stop()


def test_a_lease_granted_by_the_hub_sets_the_renewal(make_server: ServerFactory) -> None:
    hub = FakeHub(grant_lease=4).start()
    try:
        srv = youtube_server(make_server, hub, lease_s=1)
        register(srv, "ana", "UC-ana")
        connector(srv)
        wait_for(lambda: hub.seen() and hub.seen()[0].verified)
        time.sleep(2.5)  # past 80% of the lease asked for (0.8 s), not of the one granted
        assert len(hub.seen()) == 1
        wait_for(lambda: len(hub.seen()) == 2, timeout=5)  # at 80% of 4 s
    finally:
        hub.stop()


def test_verification_of_a_topic_never_asked_for_is_refused(make_server: ServerFactory) -> None:
    hub = FakeHub().start()
    try:
        srv = youtube_server(make_server, hub, lease_s=60)
        register(srv, "ana", "UC-ana")
        made = connector(srv)
        wait_for(lambda: hub.seen() and hub.seen()[0].verified)
        query = {
            "hub.mode": "subscribe",
            "hub.topic": TOPIC.format("UC-someone-else"),
            "hub.challenge": "abc",
            "hub.lease_seconds": "60",
        }
        refused = httpx.get(srv.url + made["callback_url"], params=query)
        assert refused.status_code == 404
        query["hub.topic"] = TOPIC.format("UC-ana")
        accepted = httpx.get(srv.url + made["callback_url"], params=query)
        assert (accepted.status_code, accepted.text) == (200, "abc")
    finally:
        hub.stop()


def test_a_failing_hub_is_asked_again_later(make_server: ServerFactory) -> None:
    hub = FakeHub(status=503).start()
    try:
        srv = youtube_server(make_server, hub, lease_s=60)
        register(srv, "ana", "UC-ana")
        connector(srv)
        wait_for(lambda: len(hub.seen()) >= 2, timeout=15)
        times = [s.at for s in hub.seen()]
        assert times[1] - times[0] >= 0.4  # not hammered: a jittered, growing delay
    finally:
        hub.stop()


def test_without_a_subscriber_only_the_connectors_own_topics_are_confirmed(
    server: LiveServer,
) -> None:
    """No public URL: this process subscribes nothing. A hub's verification is still
    answered only for the feeds of the tenant's channels (another process, or an
    earlier run, may have asked for them), never for a topic anyone names."""
    register(server, "ana", "UC-ana")
    made = connector(server)
    url = server.url + made["callback_url"]

    def verify(mode: str, channel: str) -> httpx.Response:
        query = {"hub.mode": mode, "hub.topic": TOPIC.format(channel), "hub.challenge": "c-91"}
        return httpx.get(url, params={**query, "hub.lease_seconds": "60"})

    for mode, channel in (("subscribe", "UC-anyone"), ("unsubscribe", "UC-ana")):
        refused = verify(mode, channel)
        assert (refused.status_code, refused.text) == (
            404,
            "no subscription to this topic was asked for",
        )
    for mode, channel in (("subscribe", "UC-ana"), ("unsubscribe", "UC-gone")):
        confirmed = verify(mode, channel)
        assert (confirmed.status_code, confirmed.text) == (200, "c-91")
        assert confirmed.headers["content-type"] == "text/plain; charset=utf-8"
        assert confirmed.headers["x-content-type-options"] == "nosniff"
