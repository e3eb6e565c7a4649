"""The audit log: every change and export, with who, what, when and from where; read
by admins of the tenant only; never a secret in it."""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import LiveServer, ServerFactory, cli, event, start_server, stored_rows

AUDIT = "/v1/admin/audit"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("audit"), poll_connectors=False)
    yield live
    live.stop()


def marker(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


def entries(srv: LiveServer, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
    with srv.client(key or srv.keys["acme"].admin) as admin:
        response = admin.get(AUDIT, params=params)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def entry_for(srv: LiveServer, action: str, target_id: str) -> dict[str, Any]:
    found = [e for e in entries(srv, action=action, limit=1000) if e["target_id"] == target_id]
    assert len(found) == 1, (action, target_id, entries(srv, limit=20))
    return found[0]


def admin(srv: LiveServer, tenant: str = "acme") -> httpx.Client:
    return srv.client(srv.keys[tenant].admin)


def test_creating_and_revoking_a_key_is_recorded_with_who_and_where(srv: LiveServer) -> None:
    acme = srv.keys["acme"]
    with admin(srv) as client:
        created = client.post("/v1/admin/keys", json={"scopes": ["read"], "name": "brand-view"})
        new_id, secret = created.json()["id"], created.json()["key"]
        assert client.delete(f"/v1/admin/keys/{new_id}").status_code == 200

    made = entry_for(srv, "key.create", new_id)
    assert made["key_id"] == acme.ids["admin"]
    assert made["target_type"] == "key"
    assert made["status"] == 201
    assert made["ip"] == "127.0.0.1"
    assert made["fields"] == ["name", "scopes"]
    moment = dt.datetime.fromisoformat(made["at"])
    assert abs((dt.datetime.now(dt.UTC) - moment).total_seconds()) < 300
    revoked = entry_for(srv, "key.revoke", new_id)
    assert (revoked["key_id"], revoked["status"]) == (acme.ids["admin"], 200)

    with admin(srv) as client:
        answer = client.get(AUDIT, params={"limit": 1000})
        as_csv = client.get(AUDIT, params={"limit": 1000, "format": "csv"})
    for text in (answer.text, as_csv.text):
        assert secret not in text
        assert secret.split("_", 2)[2] not in text


def test_minting_and_revoking_a_stream_token_is_recorded_without_the_token(
    srv: LiveServer,
) -> None:
    acme = srv.keys["acme"]
    with srv.client(acme.read) as client:
        minted = client.post(
            "/v1/metrics/subscribe", json={"influencer_id": "inf-audit", "tail": True}
        )
        assert minted.status_code == 201, minted.text
        sub_id, token = minted.json()["subscription_id"], minted.json()["token"]
        assert client.delete(f"/v1/metrics/subscribe/{sub_id}").status_code == 200

    issued = entry_for(srv, "stream_token.issue", sub_id)
    assert (issued["key_id"], issued["target_type"], issued["status"]) == (
        acme.ids["read"],
        "stream_token",
        201,
    )
    assert sorted(issued["fields"]) == ["influencer_id", "tail"]
    revoked = entry_for(srv, "stream_token.revoke", sub_id)
    assert (revoked["key_id"], revoked["status"]) == (acme.ids["read"], 200)
    with admin(srv) as client:
        everything = client.get(AUDIT, params={"limit": 1000}).text
    assert token not in everything


def test_registry_changes_and_an_erasure_are_recorded(srv: LiveServer) -> None:
    influencer = marker("inf")
    with admin(srv) as client:
        assert client.post(
            "/v1/influencers", json={"id": influencer, "name": "Ana"}
        ).status_code in (200, 201)
        assert (
            client.patch(f"/v1/influencers/{influencer}", json={"name": "Ana B"}).status_code == 200
        )
        assert client.delete(f"/v1/influencers/{influencer}").status_code == 200
        assert client.post("/v1/influencers", json={"id": influencer, "name": "Ana"}).is_success
        erased = client.delete(f"/v1/influencers/{influencer}", params={"erase": "true"})
        assert erased.status_code == 200

    admin_id = srv.keys["acme"].ids["admin"]
    updated = entry_for(srv, "influencer.update", influencer)
    assert (updated["key_id"], updated["fields"], updated["target_type"]) == (
        admin_id,
        ["name"],
        "influencer",
    )
    assert entry_for(srv, "influencer.delete", influencer)["key_id"] == admin_id
    assert entry_for(srv, "influencer.erase", influencer)["status"] == 200
    created = [e for e in entries(srv, action="influencer.create") if e["target_id"] == influencer]
    assert len(created) == 2


def test_a_connector_change_is_recorded_without_its_secrets(srv: LiveServer) -> None:
    secrets = {"app_secret": marker("app-secret"), "verify_token": marker("verify-token")}
    token = marker("access-token")
    with admin(srv) as client:
        made = client.post(
            "/v1/admin/connectors",
            json={
                "platform": "instagram",
                "secrets": secrets,
                "credentials": [{"access_token": token, "account_id": "17841400000000001"}],
            },
        )
        assert made.status_code == 201, made.text
        connector_id = made.json()["id"]
        assert client.delete(f"/v1/admin/connectors/{connector_id}").status_code == 200
        answer = client.get(AUDIT, params={"limit": 1000})
        as_csv = client.get(AUDIT, params={"limit": 1000, "format": "csv"})

    created = entry_for(srv, "connector.create", connector_id)
    assert created["fields"] == ["credentials", "platform", "secrets"]
    assert entry_for(srv, "connector.delete", connector_id)["status"] == 200
    for text in (answer.text, as_csv.text):
        for secret in (*secrets.values(), token):
            assert secret not in text


def test_an_export_is_recorded(srv: LiveServer) -> None:
    with srv.client(srv.keys["acme"].read) as reader:
        exported = reader.get("/v1/content/trending", params={"format": "csv"})
    assert exported.status_code == 200, exported.text
    recorded = entry_for(srv, "export.csv", "/v1/content/trending")
    assert recorded["key_id"] == srv.keys["acme"].ids["read"]
    assert recorded["target_type"] == "report"
    assert recorded["fields"] == ["format"]


def test_the_client_address_is_the_forwarded_one_behind_a_trusted_proxy(
    srv: LiveServer,
) -> None:
    influencer = marker("inf")
    with admin(srv) as client:
        made = client.post(
            "/v1/influencers",
            json={"id": influencer, "name": "Bo"},
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
        )
    assert made.is_success
    # The test server trusts its own address as a proxy (uvicorn's forwarded_allow_ips).
    assert entry_for(srv, "influencer.create", influencer)["ip"] == "203.0.113.9"


def test_ingest_and_reads_leave_no_entry(srv: LiveServer) -> None:
    before = {e["id"] for e in entries(srv, limit=1000)}
    assert srv.post_events(srv.keys["acme"].ingest, [event()]).status_code == 200
    with srv.client(srv.keys["acme"].read) as reader:
        assert reader.get("/v1/influencers").status_code == 200
    with admin(srv) as client:
        assert client.get("/v1/admin/keys").status_code == 200
    assert {e["id"] for e in entries(srv, limit=1000)} == before


def test_only_the_tenants_admins_read_its_audit(srv: LiveServer) -> None:
    influencer = marker("inf")
    with admin(srv) as client:
        assert client.post("/v1/influencers", json={"id": influencer, "name": "Cy"}).is_success
    theirs = entries(srv, srv.keys["globex"].admin, limit=1000)
    assert all(influencer not in str(e) for e in theirs)
    assert all(e["key_id"] not in srv.keys["acme"].ids.values() for e in theirs)
    for key in (srv.keys["acme"].read, srv.keys["acme"].ingest):
        with srv.client(key) as client:
            refused = client.get(AUDIT)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
    with srv.client() as anonymous:
        assert anonymous.get(AUDIT).status_code == 401


def test_filters_cursor_and_csv(srv: LiveServer) -> None:
    start = dt.datetime.now(dt.UTC)
    names = [marker("inf") for _ in range(5)]
    with admin(srv) as client:
        for name in names:
            assert client.post("/v1/influencers", json={"id": name, "name": "D"}).is_success
    since = start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    wanted = {"since": since, "action": "influencer.create", "limit": 2}
    seen: list[str] = []
    cursor: str | None = None
    with admin(srv) as client:
        for _ in range(10):
            page = client.get(AUDIT, params={**wanted, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            seen += [e["target_id"] for e in page.json()["data"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        by_key = client.get(AUDIT, params={"key_id": "nobody", "since": since})
        as_csv = client.get(
            AUDIT, params={"since": since, "action": "influencer.create", "format": "csv"}
        )
        bad = client.get(AUDIT, params={"since": "yesterday"})
    assert seen == list(reversed(names))  # newest first
    assert by_key.json()["data"] == []
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert "filename*=" in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["target_id"] for r in rows] == list(reversed(names))
    assert {r["action"] for r in rows} == {"influencer.create"}
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "since"


def test_a_refused_change_is_recorded_and_its_target_cannot_inject_a_formula(
    srv: LiveServer,
) -> None:
    with admin(srv) as client:
        missing = client.delete("/v1/admin/keys/=HYPERLINK(1)")
        as_csv = client.get(AUDIT, params={"action": "key.revoke", "format": "csv"})
    assert missing.status_code == 404
    assert entry_for(srv, "key.revoke", "=HYPERLINK(1)")["status"] == 404
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert "'=HYPERLINK(1)" in [r["target_id"] for r in rows]
    assert "=HYPERLINK(1)" not in [r["target_id"] for r in rows]


def test_key_and_tenant_changes_of_the_command_line_are_recorded(srv: LiveServer) -> None:
    done = cli("keys", "create", "--tenant", "acme", "--scopes", "read", "--data", str(srv.data))
    key_id = done.stdout.split()[1]
    recorded = entry_for(srv, "key.create", key_id)
    assert recorded["key_id"] == f"cli:{getpass.getuser()}"
    assert recorded["ip"] == "local"
    assert done.stdout.strip().splitlines()[-1] not in str(entries(srv, limit=1000))


def test_a_command_line_export_is_recorded(make_server: ServerFactory, tmp_path: Path) -> None:
    live = make_server(poll_connectors=False)
    assert live.post_events(live.keys["acme"].ingest, [event()]).status_code == 200
    live.stop()
    cli("export", "--tenant", "acme", "--data", str(live.data), "--out", str(tmp_path / "a.ndjson"))
    rows = stored_rows(
        live.data,
        "SELECT key_id, action, target_type, target_id, ip FROM audit_log "
        "WHERE tenant_id = 'acme' AND action = 'events.export'",
    )
    assert rows == [(f"cli:{getpass.getuser()}", "events.export", "tenant", "acme", "local")]
