"""Admin key routes, revocation taking effect at once, and tenant isolation."""

from __future__ import annotations

import re

from .support import LiveServer, ServerFactory, bearer, event

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


def samples(text: str, name: str) -> dict[str, float]:
    """Prometheus samples of ``name``, keyed by their label string."""
    return {m["labels"]: float(m["value"]) for m in SAMPLE.finditer(text) if m["name"] == name}


def test_admin_creates_lists_and_revokes_keys(server: LiveServer) -> None:
    acme = server.keys["acme"]
    with server.client(acme.admin) as admin:
        created = admin.post("/v1/admin/keys", json={"scopes": ["ingest", "read"], "name": "ios"})
        listed = admin.get("/v1/admin/keys")

    assert created.status_code == 201
    new = created.json()
    secret = new["key"]
    assert secret.startswith("hm_")
    assert new["name"] == "ios"
    assert new["scopes"] == ["ingest", "read"]
    assert new["revoked"] is False

    assert listed.status_code == 200
    keys = {k["id"]: k for k in listed.json()["data"]}
    assert set(keys) == {*acme.ids.values(), new["id"]}
    assert keys[new["id"]] == {k: v for k, v in new.items() if k != "key"}
    assert all("key" not in k and "key_hash" not in k for k in keys.values())
    for known in (secret, *acme.secrets.values()):
        assert known not in listed.text
        assert known.split("_", 2)[2] not in listed.text

    # The new key works at once, with exactly its scopes.
    assert server.post_events(secret, [event()]).status_code == 200
    with server.client(secret) as client:
        assert client.get("/v1/admin/keys").status_code == 403

    with server.client(acme.admin) as admin:
        revoked = admin.delete(f"/v1/admin/keys/{new['id']}")
        twice = admin.delete(f"/v1/admin/keys/{new['id']}")
        unknown = admin.delete("/v1/admin/keys/ffffffffffff")
        after = {k["id"]: k["revoked"] for k in admin.get("/v1/admin/keys").json()["data"]}

    assert revoked.status_code == 200
    assert revoked.json()["id"] == new["id"]
    assert revoked.json()["revoked"] is True
    assert "key" not in revoked.json()
    assert twice.status_code == 200
    assert twice.json()["revoked"] is True
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert after[new["id"]] is True
    assert not any(after[i] for i in acme.ids.values())

    # Revocation takes effect on the very next request.
    refused = server.post_events(secret, [event()])
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"


def test_an_admin_key_revoking_itself_is_refused_next(server: LiveServer) -> None:
    acme = server.keys["acme"]
    with server.client(acme.admin) as admin:
        gone = admin.delete(f"/v1/admin/keys/{acme.ids['admin']}")
        after = admin.get("/v1/admin/keys")

    assert gone.status_code == 200
    assert after.status_code == 401


def test_create_key_input_errors(server: LiveServer) -> None:
    with server.client(server.keys["acme"].admin) as admin:
        unknown = admin.post("/v1/admin/keys", json={"scopes": ["ingest", "root"]})
        empty = admin.post("/v1/admin/keys", json={"scopes": []})
        missing = admin.post("/v1/admin/keys", json={"name": "x"})
        not_json = admin.post(
            "/v1/admin/keys", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        listed = admin.get("/v1/admin/keys").json()["data"]

    assert unknown.status_code == 400
    assert unknown.json()["error"]["field"] == "scopes"
    assert "root" in unknown.json()["error"]["message"]
    assert empty.status_code == 400
    assert empty.json()["error"]["field"] == "scopes"
    assert missing.status_code == 422
    assert missing.json()["error"]["field"] == "scopes"
    assert 400 <= not_json.status_code < 500
    assert len(listed) == 3


# -- tenant isolation ----------------------------------------------------------


def test_a_tenant_cannot_see_or_revoke_another_tenants_keys(server: LiveServer) -> None:
    acme, globex = server.keys["acme"], server.keys["globex"]
    with server.client(acme.admin) as admin:
        listed = admin.get("/v1/admin/keys").json()["data"]
        attempt = admin.delete(f"/v1/admin/keys/{globex.ids['ingest']}")

    assert {k["id"] for k in listed} == set(acme.ids.values())
    assert attempt.status_code == 404
    assert attempt.json()["error"]["code"] == "not_found"
    # globex's key still works, and globex still sees it active.
    assert server.post_events(globex.ingest, [event()]).status_code == 200
    with server.client(globex.admin) as admin:
        state = {k["id"]: k["revoked"] for k in admin.get("/v1/admin/keys").json()["data"]}
    assert state == dict.fromkeys(globex.ids.values(), False)


def test_same_event_id_in_two_tenants_is_not_a_duplicate(server: LiveServer) -> None:
    shared = event(event_id="shared-id-1")
    a = server.post_events(server.keys["acme"].ingest, [shared])
    b = server.post_events(server.keys["globex"].ingest, [shared])
    a_again = server.post_events(server.keys["acme"].ingest, [shared])

    assert a.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert b.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert a_again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    rows = server.rows("SELECT tenant_id, event_id FROM events ORDER BY 1")
    assert rows == [("acme", "shared-id-1"), ("globex", "shared-id-1")]


def test_metrics_show_only_the_callers_tenant(make_server: ServerFactory) -> None:
    srv = make_server(metrics_token="scrape-secret-1")
    acme, globex = srv.keys["acme"], srv.keys["globex"]
    assert srv.post_events(acme.ingest, [event(), event()]).json()["accepted"] == 2
    assert srv.post_events(globex.ingest, [event() for _ in range(5)]).json()["accepted"] == 5
    assert srv.post_events(globex.ingest, [event(platform="myspace")]).status_code == 400

    with srv.client(acme.admin) as client:
        as_acme = client.get("/metrics").text
    with srv.client(globex.admin) as client:
        as_globex = client.get("/metrics").text
    with srv.client("scrape-secret-1") as client:
        as_scraper = client.get("/metrics").text

    accepted = "hypemeter_events_accepted_total"
    assert samples(as_acme, accepted) == {'tenant="acme"': 2.0}
    assert samples(as_globex, accepted) == {'tenant="globex"': 5.0}
    assert samples(as_scraper, accepted) == {'tenant="acme"': 2.0, 'tenant="globex"': 5.0}
    assert "globex" not in as_acme
    assert "acme" not in as_globex
    assert samples(as_scraper, "hypemeter_events_rejected_total") == {
        'reason="platform",tenant="globex"': 1.0
    }


def test_metrics_of_one_tenant_do_not_reveal_another_tenants_traffic(
    server: LiveServer,
) -> None:
    """Invariant 4: a key of tenant A can never infer tenant B's data."""
    acme, globex = server.keys["acme"], server.keys["globex"]
    with server.client(acme.admin) as client:
        before = client.get("/metrics").text
        for _ in range(3):
            assert (
                client.post("/v1/events", json=[event()], headers=bearer(globex.ingest)).status_code
                == 200
            )
        after = client.get("/metrics").text

    def requests_seen(text: str) -> dict[str, float]:
        return samples(text, "hypemeter_request_duration_seconds_count")

    # Only acme's own requests (the first scrape) may show up between the scrapes.
    grown = {
        labels: value - requests_seen(before).get(labels, 0.0)
        for labels, value in requests_seen(after).items()
        if value != requests_seen(before).get(labels, 0.0)
    }
    assert 'method="POST",route="/v1/events",status="200"' not in grown, (
        "acme's scrape counts globex's ingest requests"
    )
