"""DELETE /v1/influencers/{id}?erase=true: the influencer's events and rollups go too."""

from __future__ import annotations

from typing import Any

from .support import LiveServer, event

# Periods of whole hours end with the current hour: "2h" holds events of the last
# hour whenever the test runs, an hour boundary included.


def totals(srv: LiveServer, key: str, influencer: str) -> dict[str, Any]:
    with srv.client(key) as client:
        response = client.get(
            f"/v1/influencers/{influencer}/metrics",
            params={"period": "2h", "granularity": "hour", "metrics": "likes,comments"},
        )
    assert response.status_code == 200, response.text
    series = response.json()["series"]
    return {m: sum(point[m] for point in series) for m in ("likes", "comments")}


def register(srv: LiveServer, tenant: str, influencer: str, account: str) -> None:
    body = {
        "id": influencer,
        "name": influencer.title(),
        "accounts": [{"platform": "instagram", "account_id": account}],
    }
    with srv.client(srv.keys[tenant].admin) as client:
        assert client.post("/v1/influencers", json=body).status_code == 201


def tenant_likes(srv: LiveServer, key: str) -> float:
    with srv.client(key) as client:
        response = client.get(
            "/v1/metrics/aggregate",
            params={"metric": "likes", "period": "2h", "group_by": "platform"},
        )
    assert response.status_code == 200, response.text
    return float(sum(group["value"] for group in response.json()["data"]))


def test_erase_removes_the_events_and_answers_how_many(server: LiveServer) -> None:
    acme, globex = server.keys["acme"], server.keys["globex"]
    register(server, "acme", "zed", "z-1")
    register(server, "acme", "ana", "a-1")
    register(server, "globex", "zed", "z-1")
    zed = [event(influencer_id="zed", value=2) for _ in range(5)]
    zed.append(event(influencer_id="zed", metric="comments", text="hello", content_id="p-9"))
    ana = [event(influencer_id="ana", value=3) for _ in range(4)]
    with server.client(acme.ingest) as client:
        assert client.post("/v1/events", json=zed + ana).json()["accepted"] == 10
    with server.client(globex.ingest) as client:
        assert client.post("/v1/events", json=zed).json()["accepted"] == 6
    assert totals(server, acme.read, "zed") == {"likes": 10, "comments": 1}
    assert tenant_likes(server, acme.read) == 22

    with server.client(acme.admin) as client:
        answer = client.delete("/v1/influencers/zed", params={"erase": "true"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"id": "zed", "deleted": True, "erased_events": 6}
        assert client.get("/v1/influencers/zed").status_code in (403, 404)

    assert totals(server, acme.read, "zed") == {"likes": 0, "comments": 0}
    assert totals(server, acme.read, "ana") == {"likes": 12, "comments": 0}
    assert tenant_likes(server, acme.read) == 12
    # The other tenant's influencer of the same id keeps everything.
    assert totals(server, globex.read, "zed") == {"likes": 10, "comments": 1}
    assert server.stored_count("acme") == 4


def test_delete_without_erase_keeps_the_events(server: LiveServer) -> None:
    acme = server.keys["acme"]
    register(server, "acme", "zed", "z-1")
    with server.client(acme.ingest) as client:
        sent = [event(influencer_id=None, account_id="z-1") for _ in range(3)]
        assert client.post("/v1/events", json=sent).json()["accepted"] == 3
    with server.client(acme.admin) as client:
        answer = client.delete("/v1/influencers/zed")
    assert answer.json() == {"id": "zed", "deleted": True, "erased_events": 0}
    assert totals(server, acme.read, "zed") == {"likes": 3, "comments": 0}
    # The account no longer resolves: an event naming only it is refused, by item.
    with server.client(acme.ingest) as client:
        refused = client.post("/v1/events", json=[event(influencer_id=None, account_id="z-1")])
    assert refused.status_code == 400
    assert refused.json()["rejected"][0]["field"] == "influencer_id"


def test_erase_is_for_admins_and_influencers_only(server: LiveServer) -> None:
    acme = server.keys["acme"]
    register(server, "acme", "zed", "z-1")
    with server.client(acme.read) as client:
        assert client.delete("/v1/influencers/zed", params={"erase": "true"}).status_code == 403
    with server.client(acme.admin) as client:
        missing = client.delete("/v1/influencers/nobody", params={"erase": "true"})
        assert missing.status_code == 404
        assert missing.json()["error"]["field"] == "id"
