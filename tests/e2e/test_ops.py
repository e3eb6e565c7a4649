"""Operations routes, OpenAPI and docs, request ids."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from . import cluster
from .support import LiveServer, event, start_server

SAMPLE = re.compile(r"^hypemeter_events_accepted_total\{tenant=\"(\w+)\"\} (\S+)$", re.M)


def test_healthz_and_readyz(shared_server: LiveServer) -> None:
    with shared_server.client() as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    backends = {"store": "ok", "bus": "ok", **({"log": "ok"} if cluster.CLUSTER else {})}
    assert ready.json() == {"status": "ready", **backends}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """acme stored 2 events and globex 1; the tests only scrape."""
    srv = start_server(tmp_path_factory.mktemp("scraped"), metrics_token="tok-123")
    assert srv.post_events(srv.keys["acme"].ingest, [event(), event()]).status_code == 200
    assert srv.post_events(srv.keys["globex"].ingest, [event()]).status_code == 200
    yield srv
    srv.stop()


def test_metrics_with_an_admin_key(scraped: LiveServer) -> None:
    with scraped.client(scraped.keys["acme"].admin) as client:
        response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert SAMPLE.findall(response.text) == [("acme", "2.0")]
    assert "# TYPE hypemeter_events_accepted_total counter" in response.text
    assert (
        'hypemeter_request_duration_seconds_count{method="POST",route="/v1/events",'
        'status="200",tenant="acme"}' in response.text
    )
    assert 'tenant="globex"' not in response.text
    # Process-wide gauges reveal other tenants' load: they are for the scrape token only.
    assert "hypemeter_ingest_queue_depth" not in response.text


def test_metrics_with_the_scrape_token_sees_every_tenant(scraped: LiveServer) -> None:
    with scraped.client("tok-123") as client:
        response = client.get("/metrics")

    assert response.status_code == 200
    assert sorted(SAMPLE.findall(response.text)) == [("acme", "2.0"), ("globex", "1.0")]
    assert "hypemeter_ingest_queue_depth 0.0" in response.text
    assert "hypemeter_store_size_bytes" in response.text


@pytest.mark.parametrize(
    ("who", "status"),
    [("none", 401), ("wrong-token", 401), ("read", 403), ("ingest", 403)],
)
def test_metrics_refuses_others(scraped: LiveServer, who: str, status: int) -> None:
    key = {
        "none": None,
        "wrong-token": "tok-124",
        "read": scraped.keys["acme"].read,
        "ingest": scraped.keys["acme"].ingest,
    }[who]
    with scraped.client(key) as client:
        response = client.get("/metrics")

    assert response.status_code == status
    assert "hypemeter_events_accepted_total" not in response.text
    assert response.json()["error"]["code"] == {401: "unauthenticated", 403: "forbidden"}[status]


def test_without_a_configured_token_no_token_scrapes(server: LiveServer) -> None:
    with server.client("tok-123") as client:
        response = client.get("/metrics")

    assert response.status_code == 401
    assert "hypemeter_events_accepted_total" not in response.text


EXPECTED_OPERATIONS = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/events"),
    ("POST", "/v1/track/{metric}"),
    ("GET", "/v1/admin/metrics"),
    ("POST", "/v1/admin/metrics"),
    ("GET", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys"),
    ("DELETE", "/v1/admin/keys/{key_id}"),
    ("POST", "/v1/oauth/token"),
    ("GET", "/v1/admin/audit"),
    ("GET", "/v1/influencers/{influencer_id}/metrics"),
    ("GET", "/v1/campaigns/{campaign_id}/metrics"),
    ("GET", "/v1/metrics/aggregate"),
    ("GET", "/v1/metrics/series"),
    ("GET", "/v1/ingestion/health"),
    ("GET", "/v1/content/trending"),
    ("GET", "/v1/users/activity"),
    ("GET", "/v1/leaderboard"),
    ("GET", "/v1/admin/emv"),
    ("GET", "/v1/stream/sse"),
    ("POST", "/v1/metrics/subscribe"),
    ("DELETE", "/v1/metrics/subscribe/{subscription_id}"),
    ("PUT", "/v1/admin/emv"),
    ("POST", "/v1/influencers"),
    ("GET", "/v1/influencers"),
    ("GET", "/v1/influencers/{influencer_id}"),
    ("PATCH", "/v1/influencers/{influencer_id}"),
    ("DELETE", "/v1/influencers/{influencer_id}"),
    ("POST", "/v1/campaigns"),
    ("GET", "/v1/campaigns"),
    ("GET", "/v1/campaigns/{campaign_id}"),
    ("PATCH", "/v1/campaigns/{campaign_id}"),
    ("DELETE", "/v1/campaigns/{campaign_id}"),
    ("POST", "/v1/content"),
    ("GET", "/v1/content"),
    ("GET", "/v1/content/{content_id}"),
    ("PATCH", "/v1/content/{content_id}"),
    ("DELETE", "/v1/content/{content_id}"),
    ("POST", "/v1/admin/connectors"),
    ("GET", "/v1/admin/connectors"),
    ("DELETE", "/v1/admin/connectors/{connector_id}"),
    ("GET", "/v1/admin/dead-letters"),
    ("POST", "/v1/admin/dead-letters/{letter_id}/replay"),
    ("DELETE", "/v1/admin/dead-letters/{letter_id}"),
    ("DELETE", "/v1/admin/dead-letters"),
    ("GET", "/v1/admin/retention"),
    ("GET", "/v1/admin/value-limits"),
    ("PUT", "/v1/admin/value-limits"),
    ("GET", "/v1/webhooks/{platform}/{connector_id}"),
    ("POST", "/v1/webhooks/{platform}/{connector_id}"),
}


def _has_example(content: dict[str, Any], spec: dict[str, Any]) -> bool:
    for media in content.values():
        if "example" in media or "examples" in media:
            return True
        ref = media.get("schema", {}).get("$ref")
        if ref:
            schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
            props = schema.get("properties", {}).values()
            if props and all("examples" in p or "example" in p or "default" in p for p in props):
                return True
    return False


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }


def test_openapi_lists_every_route_with_examples(shared_server: LiveServer) -> None:
    with shared_server.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    operations = _operations(spec)

    assert set(operations) == EXPECTED_OPERATIONS

    # Each documented operation is served, and no undocumented method is.
    with shared_server.client() as client:
        for path in {p for _, p in EXPECTED_OPERATIONS}:
            url = (
                path.replace("{metric}", "likes")
                .replace("{key_id}", "abc")
                .replace("{influencer_id}", "inf-1")
                .replace("{campaign_id}", "c-1")
                .replace("{content_id}", "p-1")
                .replace("{connector_id}", "con-1")
                .replace("{letter_id}", "dl-1")
                .replace("{platform}", "instagram")
            )
            # Webhooks take no key: an unknown connector is a 404.
            served = {404} if path.startswith("/v1/webhooks/") else {200, 401}
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                if path == "/v1/content/trending" and method in ("PATCH", "DELETE"):
                    continue  # /v1/content/{content_id} (the id "trending" is reserved)
                status = client.request(method, url).status_code
                if (method, path) in EXPECTED_OPERATIONS:
                    assert status in served, (method, path, status)
                else:
                    assert status == 405, (method, path, status)

    for (method, path), op in operations.items():
        assert op.get("summary"), (method, path)
        success = [s for s in op["responses"] if s.startswith("2")]
        assert success, (method, path)
        for status in success:
            content = op["responses"][status].get("content", {})
            assert _has_example(content, spec), f"{method} {path} {status} has no example"
        if "requestBody" in op:
            assert _has_example(op["requestBody"]["content"], spec), f"{method} {path} body"


def test_openapi_every_documented_response_has_an_example(shared_server: LiveServer) -> None:
    with shared_server.client() as client:
        spec = client.get("/openapi.json").json()

    missing = [
        f"{method} {path} {status}"
        for (method, path), op in _operations(spec).items()
        for status, response in op["responses"].items()
        if not _has_example(response.get("content", {}), spec)
    ]
    assert missing == []


def test_docs_are_served_offline(shared_server: LiveServer) -> None:
    with shared_server.client() as client:
        page = client.get("/docs")
        script = client.get("/docs/static/swagger-ui-bundle.js")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text
    assert "/docs/static/swagger-ui-bundle.js" in page.text
    assert script.status_code == 200
    assert len(script.content) > 10_000


def test_request_id_is_echoed_or_assigned(shared_server: LiveServer) -> None:
    with shared_server.client(shared_server.keys["acme"].ingest) as client:
        echoed = client.get("/healthz", headers={"X-Request-ID": "req-abc-123"})
        assigned = client.get("/healthz")
        on_error = client.post("/v1/events", json=[], headers={"X-Request-ID": "req-err-9"})
        too_long = client.get("/healthz", headers={"X-Request-ID": "r" * 200})

    assert echoed.headers["x-request-id"] == "req-abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", assigned.headers["x-request-id"])
    assert on_error.status_code == 400
    assert on_error.headers["x-request-id"] == "req-err-9"
    assert re.fullmatch(r"[0-9a-f]{32}", too_long.headers["x-request-id"])


def test_unknown_route_and_method(shared_server: LiveServer) -> None:
    with shared_server.client(shared_server.keys["acme"].admin) as client:
        missing = client.get("/v1/nothing-here")
        wrong = client.get("/v1/events")

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
