"""The registry over real HTTP: influencers, campaigns and content, and ingest enrichment.

Admin keys write the registry and read keys read it; every entity belongs to the
caller's tenant. Events that name only a registered content item, or a registered
platform account, are counted for the influencer (and campaign) the registry names.
On the cluster profile queries alternate between two API processes, so what one
process wrote is read back through the other half of the time.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from . import cluster
from .support import LiveServer, ServerFactory, event, new_id

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
UNRESOLVED = (
    "influencer_id is required, unless content_id or account_id is registered "
    "(/v1/content, /v1/influencers)"
)


class Tenant:
    """One tenant's keys, each in an HTTP client of its own."""

    def __init__(self, srv: LiveServer, tenant: str) -> None:
        self.srv = srv
        keys = srv.keys[tenant]
        self.admin = srv.client(keys.admin)
        self.read = srv.client(keys.read)
        self.ingest_key = keys.ingest
        self.ingester = srv.client(keys.ingest)

    def close(self) -> None:
        for client in (self.admin, self.read, self.ingester):
            client.close()

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.admin.post(path, json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.admin.patch(path, json=body)
        assert response.status_code == 200, response.text
        changed: dict[str, Any] = response.json()
        return changed

    def fetch(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.read.get(path, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def ids(self, path: str, **params: Any) -> list[str]:
        """The ids of one page, which must be the last."""
        body = self.fetch(path, **params)
        assert body["next_cursor"] is None, body
        return [item["id"] for item in body["data"]]

    def send(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.ingester.post("/v1/events", json=events)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def likes(self, kind: str, entity_id: str) -> Any:
        """Total likes of the last hour of an influencer or a campaign."""
        answer = self.fetch(f"/v1/{kind}/{entity_id}/metrics", period="1h", metrics="likes")
        return answer["totals"]["likes"]


@pytest.fixture
def acme(server: LiveServer) -> Iterator[Tenant]:
    tenant = Tenant(server, "acme")
    yield tenant
    tenant.close()


@pytest.fixture
def globex(server: LiveServer) -> Iterator[Tenant]:
    tenant = Tenant(server, "globex")
    yield tenant
    tenant.close()


def error(response: httpx.Response, status: int, code: str, field: str | None) -> str:
    """Check an error answer and return its message."""
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert (body["code"], body.get("field")) == (code, field), body
    message: str = body["message"]
    return message


def stamps(entity: dict[str, Any]) -> tuple[str, str]:
    created, updated = entity.pop("created_at"), entity.pop("updated_at")
    assert STAMP.match(created) and STAMP.match(updated), (created, updated)
    return created, updated


def by_content(content_id: str, value: float = 1, **fields: Any) -> dict[str, Any]:
    """An event that names its content only: the registry gives the influencer."""
    return event(influencer_id=None, content_id=content_id, value=value, **fields)


def by_account(platform: str, account_id: str, value: float = 1) -> dict[str, Any]:
    return event(
        influencer_id=None, content_id=None, platform=platform, account_id=account_id, value=value
    )


ANA = {
    "id": "inf-ana",
    "name": "Ana Makes",
    "tags": ["beauty", "two words"],
    "accounts": [
        {"platform": "IG", "account_id": "1784", "handle": "@ana.makes", "followers": 184000},
        {"platform": "tiktok", "account_id": "tt-ana"},
    ],
}


# -- influencers ---------------------------------------------------------------------


def test_influencer_crud(acme: Tenant) -> None:
    created = acme.create("/v1/influencers", ANA)
    created_at, updated_at = stamps(created)
    assert created_at == updated_at
    assert created == {
        "id": "inf-ana",
        "name": "Ana Makes",
        "tags": ["beauty", "two words"],
        "accounts": [
            {
                "platform": "instagram",
                "account_id": "1784",
                "handle": "@ana.makes",
                "followers": 184000,
            },
            {"platform": "tiktok", "account_id": "tt-ana", "handle": None, "followers": None},
        ],
    }
    fetched = acme.fetch("/v1/influencers/inf-ana")
    assert stamps(fetched) == (created_at, updated_at)
    assert fetched == created

    changed = acme.patch("/v1/influencers/inf-ana", {"name": "Ana M.", "tags": ["lifestyle"]})
    new_created, new_updated = stamps(changed)
    assert new_created == created_at
    assert new_updated > updated_at
    assert changed == {**created, "name": "Ana M.", "tags": ["lifestyle"]}
    fetched = acme.fetch("/v1/influencers/inf-ana")
    assert stamps(fetched) == (new_created, new_updated)
    assert fetched == changed

    accounts = acme.patch("/v1/influencers/inf-ana", {"accounts": []})
    stamps(accounts)
    assert accounts == {**changed, "accounts": []}

    deleted = acme.admin.delete("/v1/influencers/inf-ana")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": "inf-ana", "deleted": True, "erased_events": 0}
    error(acme.read.get("/v1/influencers/inf-ana"), 404, "not_found", "id")
    error(acme.admin.delete("/v1/influencers/inf-ana"), 404, "not_found", "id")
    assert acme.fetch("/v1/influencers") == {"data": [], "next_cursor": None}
    # The id is free again.
    assert acme.create("/v1/influencers", {"id": "inf-ana", "name": "Again"})["tags"] == []


def test_influencer_errors(acme: Tenant) -> None:
    acme.create("/v1/influencers", ANA)

    duplicate = acme.admin.post("/v1/influencers", json={"id": "inf-ana", "name": "Other"})
    assert "inf-ana" in error(duplicate, 409, "conflict", "id")
    assert acme.fetch("/v1/influencers/inf-ana")["name"] == "Ana Makes"

    # An account (platform, account id) belongs to one influencer of the tenant.
    taken = {
        "id": "inf-bo",
        "name": "Bo",
        "accounts": [
            {"platform": "youtube", "account_id": "UC-bo"},
            {"platform": "instagram", "account_id": "1784"},
        ],
    }
    message = error(acme.admin.post("/v1/influencers", json=taken), 409, "conflict", "accounts.1")
    assert "inf-ana" in message
    error(acme.read.get("/v1/influencers/inf-bo"), 404, "not_found", "id")
    # The same account id on another platform is another account.
    other = {"id": "inf-bo", "name": "Bo", "accounts": [{"platform": "x", "account_id": "1784"}]}
    acme.create("/v1/influencers", other)
    steal = acme.admin.patch(
        "/v1/influencers/inf-bo", json={"accounts": [{"platform": "ig", "account_id": "1784"}]}
    )
    error(steal, 409, "conflict", "accounts.0")
    # Keeping its own account on a PATCH is not a conflict with itself.
    kept = acme.patch("/v1/influencers/inf-ana", {"accounts": ANA["accounts"][:1]})
    assert [a["account_id"] for a in kept["accounts"]] == ["1784"]

    twice = {
        "id": "inf-cy",
        "name": "Cy",
        "accounts": [
            {"platform": "tiktok", "account_id": "c"},
            {"platform": "x", "account_id": "c"},
            {"platform": "tt", "account_id": "c", "handle": "@cy"},
        ],
    }
    error(acme.admin.post("/v1/influencers", json=twice), 400, "invalid_input", "accounts.2")
    error(
        acme.admin.patch("/v1/influencers/inf-bo", json={"accounts": twice["accounts"]}),
        400,
        "invalid_input",
        "accounts.2",
    )
    assert acme.fetch("/v1/influencers/inf-bo")["accounts"][0]["platform"] == "x"

    for body, field in [
        ({"id": "has space", "name": "N"}, "id"),
        ({"id": "-lead", "name": "N"}, "id"),
        ({"id": "inf-x"}, "name"),
        ({"id": "inf-x", "name": ""}, "name"),
        ({"id": "inf-x", "name": "N", "nickname": "n"}, "nickname"),
        (
            {"id": "inf-x", "name": "N", "accounts": [{"platform": "myspace", "account_id": "1"}]},
            "accounts.0.platform",
        ),
        (
            {"id": "inf-x", "name": "N", "accounts": [{"platform": "x", "account_id": ""}]},
            "accounts.0.account_id",
        ),
        ({"id": "inf-x", "name": "N", "tags": [""]}, "tags.0"),
    ]:
        error(acme.admin.post("/v1/influencers", json=body), 422, "invalid_input", field)

    error(acme.admin.patch("/v1/influencers/nobody", json={"name": "N"}), 404, "not_found", "id")
    error(
        acme.admin.patch("/v1/influencers/inf-ana", json={"name": None}),
        400,
        "invalid_input",
        "name",
    )
    error(acme.admin.patch("/v1/influencers/inf-ana", json={"id": "x"}), 422, "invalid_input", "id")
    error(acme.read.get("/v1/influencers/nobody"), 404, "not_found", "id")
    assert acme.ids("/v1/influencers") == ["inf-ana", "inf-bo"]


# -- campaigns -----------------------------------------------------------------------


def test_campaign_crud_and_patch_semantics(acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    acme.create("/v1/influencers", {"id": "inf-2", "name": "Two"})
    created = acme.create(
        "/v1/campaigns",
        {
            "id": "spring",
            "name": "Spring launch",
            "brand": "Acme Shoes",
            "start": "2026-11-01T02:00:00+02:00",
            "end": "2026-12-01T00:00:00Z",
            "budget": 25000,
            "influencers": ["inf-1"],
            "content": ["post-1", "yt:abc"],
            "link_codes": ["SPRING10"],
        },
    )
    created_at, updated_at = stamps(created)
    assert created == {
        "id": "spring",
        "name": "Spring launch",
        "brand": "Acme Shoes",
        "start": "2026-11-01T00:00:00.000000Z",
        "end": "2026-12-01T00:00:00.000000Z",
        "budget": 25000.0,
        "influencers": ["inf-1"],
        "content": ["post-1", "yt:abc"],
        "link_codes": ["SPRING10"],
    }
    fetched = acme.fetch("/v1/campaigns/spring")
    assert stamps(fetched) == (created_at, updated_at)
    assert fetched == created

    # Only the fields given change; null clears an optional one.
    changed = acme.patch("/v1/campaigns/spring", {"brand": None, "influencers": ["inf-1", "inf-2"]})
    new_created, new_updated = stamps(changed)
    assert (new_created, new_updated > updated_at) == (created_at, True)
    assert changed == {**created, "brand": None, "influencers": ["inf-1", "inf-2"]}
    again = acme.fetch("/v1/campaigns/spring")
    stamps(again)
    assert again == changed

    budget = acme.patch("/v1/campaigns/spring", {"budget": 1.5, "end": None})
    stamps(budget)
    assert budget == {**changed, "budget": 1.5, "end": None}

    deleted = acme.admin.delete("/v1/campaigns/spring")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": "spring", "deleted": True}
    error(acme.read.get("/v1/campaigns/spring"), 404, "not_found", "id")
    error(acme.admin.delete("/v1/campaigns/spring"), 404, "not_found", "id")

    minimal = acme.create("/v1/campaigns", {"id": "bare", "name": "Bare"})
    stamps(minimal)
    assert minimal == {
        "id": "bare",
        "name": "Bare",
        "brand": None,
        "start": None,
        "end": None,
        "budget": None,
        "influencers": [],
        "content": [],
        "link_codes": [],
    }


def test_campaign_errors(acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    acme.create("/v1/campaigns", {"id": "c1", "name": "C1", "start": "2026-11-01T00:00:00Z"})

    error(acme.admin.post("/v1/campaigns", json={"id": "c1", "name": "X"}), 409, "conflict", "id")
    unknown = {"id": "c2", "name": "C2", "influencers": ["inf-1", "inf-404"]}
    assert "inf-404" in error(
        acme.admin.post("/v1/campaigns", json=unknown), 400, "invalid_input", "influencers.1"
    )
    error(acme.read.get("/v1/campaigns/c2"), 404, "not_found", "id")
    backwards = {
        "id": "c3",
        "name": "C3",
        "start": "2026-11-02T00:00:00Z",
        "end": "2026-11-01T00:00:00Z",
    }
    error(acme.admin.post("/v1/campaigns", json=backwards), 400, "invalid_input", "end")
    # A PATCH is checked against the whole campaign it makes.
    error(
        acme.admin.patch("/v1/campaigns/c1", json={"end": "2026-10-31T00:00:00Z"}),
        400,
        "invalid_input",
        "end",
    )
    error(
        acme.admin.patch("/v1/campaigns/c1", json={"influencers": ["inf-404"]}),
        400,
        "invalid_input",
        "influencers.0",
    )
    assert acme.fetch("/v1/campaigns/c1")["end"] is None
    assert acme.fetch("/v1/campaigns/c1")["influencers"] == []

    for body, field in [
        ({"id": "c4", "name": "N", "start": "2026-11-01T00:00:00"}, "start"),
        ({"id": "c4", "name": "N", "budget": -1}, "budget"),
        ({"id": "c4", "name": "N", "influencers": ["bad id"]}, "influencers.0"),
        ({"id": "c4"}, "name"),
    ]:
        error(acme.admin.post("/v1/campaigns", json=body), 422, "invalid_input", field)
    error(acme.admin.patch("/v1/campaigns/c1", json={"name": None}), 400, "invalid_input", "name")
    error(acme.admin.patch("/v1/campaigns/none", json={"name": "N"}), 404, "not_found", "id")
    assert acme.ids("/v1/campaigns") == ["c1"]


# -- content -------------------------------------------------------------------------


def test_content_crud(acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    acme.create("/v1/influencers", {"id": "inf-2", "name": "Two"})
    acme.create("/v1/campaigns", {"id": "camp-1", "name": "Camp"})
    created = acme.create(
        "/v1/content",
        {
            "id": "18012345678901234",
            "platform": "Insta",
            "influencer_id": "inf-1",
            "campaign_id": "camp-1",
            "url": "https://www.instagram.com/p/ABC/",
            "published_at": "2026-11-02T10:00:00Z",
            "type": "reel",
        },
    )
    created_at, updated_at = stamps(created)
    assert created == {
        "id": "18012345678901234",
        "platform": "instagram",
        "influencer_id": "inf-1",
        "campaign_id": "camp-1",
        "url": "https://www.instagram.com/p/ABC/",
        "published_at": "2026-11-02T10:00:00.000000Z",
        "type": "reel",
    }
    fetched = acme.fetch("/v1/content/18012345678901234")
    assert stamps(fetched) == (created_at, updated_at)
    assert fetched == created

    changed = acme.patch(
        "/v1/content/18012345678901234",
        {"influencer_id": "inf-2", "campaign_id": None, "platform": "yt"},
    )
    new_created, new_updated = stamps(changed)
    assert (new_created, new_updated > updated_at) == (created_at, True)
    assert changed == {
        **created,
        "influencer_id": "inf-2",
        "campaign_id": None,
        "platform": "youtube",
    }
    fetched = acme.fetch("/v1/content/18012345678901234")
    stamps(fetched)
    assert fetched == changed

    deleted = acme.admin.delete("/v1/content/18012345678901234")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": "18012345678901234", "deleted": True}
    error(acme.read.get("/v1/content/18012345678901234"), 404, "not_found", "id")
    error(acme.admin.delete("/v1/content/18012345678901234"), 404, "not_found", "id")


def test_content_errors(acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    base = {"id": "p1", "platform": "instagram", "influencer_id": "inf-1"}
    acme.create("/v1/content", base)

    error(acme.admin.post("/v1/content", json=base), 409, "conflict", "id")
    unknown_influencer = {**base, "id": "p2", "influencer_id": "inf-404"}
    assert "inf-404" in error(
        acme.admin.post("/v1/content", json=unknown_influencer),
        400,
        "invalid_input",
        "influencer_id",
    )
    unknown_campaign = {**base, "id": "p2", "campaign_id": "camp-404"}
    assert "camp-404" in error(
        acme.admin.post("/v1/content", json=unknown_campaign), 400, "invalid_input", "campaign_id"
    )
    error(acme.read.get("/v1/content/p2"), 404, "not_found", "id")
    reserved = error(
        acme.admin.post("/v1/content", json={**base, "id": "trending"}), 422, "invalid_input", "id"
    )
    assert "reserved" in reserved
    for body, field in [
        ({**base, "id": "p3", "platform": "myspace"}, "platform"),
        ({**base, "id": ""}, "id"),
        ({"id": "p3", "platform": "x"}, "influencer_id"),
        ({**base, "id": "p3", "published_at": "yesterday"}, "published_at"),
    ]:
        error(acme.admin.post("/v1/content", json=body), 422, "invalid_input", field)

    patch = acme.admin.patch
    error(
        patch("/v1/content/p1", json={"influencer_id": "inf-404"}),
        400,
        "invalid_input",
        "influencer_id",
    )
    error(
        patch("/v1/content/p1", json={"campaign_id": "camp-404"}),
        400,
        "invalid_input",
        "campaign_id",
    )
    error(
        patch("/v1/content/p1", json={"influencer_id": None}), 400, "invalid_input", "influencer_id"
    )
    error(patch("/v1/content/p1", json={"platform": None}), 400, "invalid_input", "platform")
    error(patch("/v1/content/p1", json={"platform": "myspace"}), 422, "invalid_input", "platform")
    error(patch("/v1/content/none", json={"type": "reel"}), 404, "not_found", "id")
    fetched = acme.fetch("/v1/content/p1")
    stamps(fetched)
    assert fetched == {**base, "campaign_id": None, "url": None, "published_at": None, "type": None}


def test_trending_stays_the_trending_query(acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    acme.create("/v1/content", {"id": "p1", "platform": "instagram", "influencer_id": "inf-1"})
    trending = acme.fetch("/v1/content/trending")
    assert trending["data"] == []
    assert "platform" not in trending


def test_a_content_id_with_a_slash_can_be_read_and_deleted(acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    created = acme.create(
        "/v1/content", {"id": "yt/abc", "platform": "yt", "influencer_id": "inf-1"}
    )
    assert created["id"] == "yt/abc"
    assert acme.ids("/v1/content") == ["yt/abc"]
    assert acme.fetch("/v1/content/yt%2Fabc")["id"] == "yt/abc"
    deleted = acme.admin.delete("/v1/content/yt%2Fabc")
    assert deleted.json() == {"id": "yt/abc", "deleted": True}


# -- lists ---------------------------------------------------------------------------


def _influencers(acme: Tenant) -> None:
    bodies: list[dict[str, Any]] = [
        {
            "id": "inf-e",
            "name": "Eve Eats",
            "tags": ["food"],
            "accounts": [{"platform": "tiktok", "account_id": "e1", "handle": "@EveEats"}],
        },
        {
            "id": "inf-a",
            "name": "Ana Makes",
            "tags": ["beauty", "two words"],
            "accounts": [{"platform": "instagram", "account_id": "a1", "handle": "@ana.makes"}],
        },
        {
            "id": "inf-c",
            "name": "Cy Cooks",
            "tags": ["food", "beauty"],
            "accounts": [{"platform": "youtube", "account_id": "c1"}],
        },
        {"id": "inf-b", "name": "Bo Builds", "tags": ["beautyx"]},
        {
            "id": "inf-d",
            "name": "Banana Dan",
            "tags": ["food"],
            "accounts": [{"platform": "instagram", "account_id": "d1", "handle": "@dan"}],
        },
    ]
    for body in bodies:
        acme.create("/v1/influencers", body)


def test_influencer_list_filters_and_search(acme: Tenant) -> None:
    _influencers(acme)
    page = acme.fetch("/v1/influencers")
    assert [i["id"] for i in page["data"]] == ["inf-a", "inf-b", "inf-c", "inf-d", "inf-e"]
    assert page["next_cursor"] is None
    assert page["data"][0]["accounts"][0]["handle"] == "@ana.makes"

    assert acme.ids("/v1/influencers", tag="beauty") == ["inf-a", "inf-c"]  # not "beautyx"
    assert acme.ids("/v1/influencers", tag="two words") == ["inf-a"]
    assert acme.ids("/v1/influencers", tag="two") == []
    assert acme.ids("/v1/influencers", platform="instagram") == ["inf-a", "inf-d"]
    assert acme.ids("/v1/influencers", platform="IG") == ["inf-a", "inf-d"]
    assert acme.ids("/v1/influencers", tag="food", platform="instagram") == ["inf-d"]
    assert acme.ids("/v1/influencers", tag="food", platform="twitch") == []
    # q: a case-insensitive part of the id, the name or a handle (with or without '@').
    assert acme.ids("/v1/influencers", q="ANA") == ["inf-a", "inf-d"]
    assert acme.ids("/v1/influencers", q="  builds ") == ["inf-b"]
    assert acme.ids("/v1/influencers", q="@eveeats") == ["inf-e"]
    assert acme.ids("/v1/influencers", q="ana.makes") == ["inf-a"]
    assert acme.ids("/v1/influencers", q="inf-c") == ["inf-c"]
    assert acme.ids("/v1/influencers", q="an", tag="food") == ["inf-d"]
    assert acme.ids("/v1/influencers", q="nobody") == []
    error(
        acme.read.get("/v1/influencers", params={"platform": "myspace"}),
        400,
        "invalid_input",
        "platform",
    )


def test_campaign_and_content_list_filters(acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    acme.create("/v1/influencers", {"id": "inf-2", "name": "Two"})
    for body in [
        {"id": "c-b", "name": "Winter Sale", "brand": "Acme", "influencers": ["inf-2"]},
        {
            "id": "c-a",
            "name": "Spring Launch",
            "brand": "Acme Shoes",
            "influencers": ["inf-1", "inf-2"],
            "link_codes": ["SPRING10"],
        },
        {"id": "c-c", "name": "Fall", "brand": "Acme", "link_codes": ["FALL"]},
    ]:
        acme.create("/v1/campaigns", body)
    assert acme.ids("/v1/campaigns") == ["c-a", "c-b", "c-c"]
    assert acme.ids("/v1/campaigns", brand="Acme") == ["c-b", "c-c"]
    assert acme.ids("/v1/campaigns", brand="Acme Shoes") == ["c-a"]
    assert acme.ids("/v1/campaigns", influencer_id="inf-2") == ["c-a", "c-b"]
    assert acme.ids("/v1/campaigns", influencer_id="inf-1") == ["c-a"]
    assert acme.ids("/v1/campaigns", link_code="SPRING10") == ["c-a"]
    assert acme.ids("/v1/campaigns", brand="Acme", influencer_id="inf-2") == ["c-b"]
    assert acme.ids("/v1/campaigns", q="shoes") == ["c-a"]  # the brand
    assert acme.ids("/v1/campaigns", q="SALE") == ["c-b"]

    content: list[dict[str, Any]] = [
        {"id": "p3", "platform": "tiktok", "influencer_id": "inf-2", "type": "video"},
        {
            "id": "p1",
            "platform": "instagram",
            "influencer_id": "inf-1",
            "campaign_id": "c-a",
            "type": "reel",
            "url": "https://instagram.com/p/Reel1",
        },
        {
            "id": "p2",
            "platform": "instagram",
            "influencer_id": "inf-2",
            "campaign_id": "c-a",
            "type": "story",
        },
        {"id": "p4", "platform": "ig", "influencer_id": "inf-1", "type": "reel"},
    ]
    for body in content:
        acme.create("/v1/content", body)
    assert acme.ids("/v1/content") == ["p1", "p2", "p3", "p4"]
    assert acme.ids("/v1/content", platform="instagram") == ["p1", "p2", "p4"]
    assert acme.ids("/v1/content", platform="TT") == ["p3"]
    assert acme.ids("/v1/content", influencer_id="inf-1") == ["p1", "p4"]
    assert acme.ids("/v1/content", campaign_id="c-a") == ["p1", "p2"]
    assert acme.ids("/v1/content", type="reel") == ["p1", "p4"]
    assert acme.ids("/v1/content", type="reel", campaign_id="c-a", platform="instagram") == ["p1"]
    assert acme.ids("/v1/content", q="reel1") == ["p1"]  # the url
    error(
        acme.read.get("/v1/content", params={"platform": "myspace"}),
        400,
        "invalid_input",
        "platform",
    )


def test_pagination_walks_every_entity_once(acme: Tenant) -> None:
    _influencers(acme)
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        page = acme.fetch("/v1/influencers", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [i["id"] for i in page["data"]]
        sizes.append(len(page["data"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
    assert cursor is None
    assert sizes == [2, 2, 1]
    assert seen == ["inf-a", "inf-b", "inf-c", "inf-d", "inf-e"]

    # A filtered walk: 3 of 5 with limit 2.
    first = acme.fetch("/v1/influencers", tag="food", limit=2)
    assert [i["id"] for i in first["data"]] == ["inf-c", "inf-d"]
    second = acme.fetch("/v1/influencers", tag="food", limit=2, cursor=first["next_cursor"])
    assert ([i["id"] for i in second["data"]], second["next_cursor"]) == (["inf-e"], None)
    # A page that ends exactly at the last entity has no next one.
    exact = acme.fetch("/v1/influencers", tag="food", limit=3)
    assert exact["next_cursor"] is None and len(exact["data"]) == 3

    # A cursor belongs to its query: other filters, another search, another kind.
    cursor = first["next_cursor"]
    for path, params in [
        ("/v1/influencers", {"tag": "beauty"}),
        ("/v1/influencers", {}),
        ("/v1/influencers", {"tag": "food", "q": "an"}),
        ("/v1/campaigns", {}),
        ("/v1/influencers", {"tag": "food", "cursor": "not-a-cursor"}),
    ]:
        response = acme.read.get(path, params={"limit": 2, "cursor": cursor, **params})
        error(response, 400, "invalid_input", "cursor")
    # ... but not to its page size.
    other_size = acme.fetch("/v1/influencers", tag="food", limit=5, cursor=cursor)
    assert [i["id"] for i in other_size["data"]] == ["inf-e"]

    for limit in (0, 501, "many"):
        error(
            acme.read.get("/v1/influencers", params={"limit": limit}), 422, "invalid_input", "limit"
        )
    assert len(acme.fetch("/v1/influencers", limit=500)["data"]) == 5


# -- scopes and tenants --------------------------------------------------------------


def test_scopes(server: LiveServer, acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    keys = server.keys["acme"]
    writes = [
        ("POST", "/v1/influencers", {"id": "inf-2", "name": "Two"}),
        ("PATCH", "/v1/influencers/inf-1", {"name": "Changed"}),
        ("DELETE", "/v1/influencers/inf-1", None),
        ("POST", "/v1/campaigns", {"id": "c", "name": "C"}),
        ("POST", "/v1/content", {"id": "p", "platform": "x", "influencer_id": "inf-1"}),
    ]
    reads = ["/v1/influencers", "/v1/influencers/inf-1", "/v1/campaigns", "/v1/content"]
    for key in (keys.read, keys.ingest):
        with server.client(key) as client:
            for method, path, body in writes:
                response = client.request(method, path, json=body)
                assert "'admin' scope" in error(response, 403, "forbidden", "scope")
    for key in (keys.admin, keys.ingest):
        with server.client(key) as client:
            for path in reads:
                assert "'read' scope" in error(client.get(path), 403, "forbidden", "scope")
    with server.client() as anonymous:
        error(anonymous.get("/v1/influencers"), 401, "unauthenticated", "Authorization")
        error(
            anonymous.post("/v1/influencers", json={"id": "x", "name": "X"}),
            401,
            "unauthenticated",
            "Authorization",
        )
    # Nothing changed.
    one = acme.fetch("/v1/influencers/inf-1")
    assert one["name"] == "One"
    assert acme.ids("/v1/influencers") == ["inf-1"]
    assert acme.ids("/v1/campaigns") == [] and acme.ids("/v1/content") == []


def test_tenants_are_isolated(acme: Tenant, globex: Tenant) -> None:
    acme.create(
        "/v1/influencers",
        {"id": "inf-1", "name": "Acme One", "accounts": [{"platform": "x", "account_id": "42"}]},
    )
    acme.create("/v1/campaigns", {"id": "camp-1", "name": "Acme camp"})
    acme.create("/v1/content", {"id": "post-1", "platform": "x", "influencer_id": "inf-1"})

    for path in ("/v1/influencers/inf-1", "/v1/campaigns/camp-1", "/v1/content/post-1"):
        error(globex.read.get(path), 404, "not_found", "id")
        error(
            globex.admin.patch(path, json={"name" if "content" not in path else "type": "Z"}),
            404,
            "not_found",
            "id",
        )
        error(globex.admin.delete(path), 404, "not_found", "id")
    for path in ("/v1/influencers", "/v1/campaigns", "/v1/content"):
        assert globex.fetch(path) == {"data": [], "next_cursor": None}
    # globex cannot refer to acme's entities either.
    error(
        globex.admin.post(
            "/v1/content", json={"id": "p", "platform": "x", "influencer_id": "inf-1"}
        ),
        400,
        "invalid_input",
        "influencer_id",
    )

    # The same ids, and the same platform account, exist in both tenants.
    theirs = globex.create(
        "/v1/influencers",
        {"id": "inf-1", "name": "Globex One", "accounts": [{"platform": "x", "account_id": "42"}]},
    )
    assert theirs["name"] == "Globex One"
    globex.create(
        "/v1/campaigns", {"id": "camp-1", "name": "Globex camp", "influencers": ["inf-1"]}
    )
    globex.create("/v1/content", {"id": "post-1", "platform": "tiktok", "influencer_id": "inf-1"})
    globex.patch("/v1/influencers/inf-1", {"tags": ["g"]})
    assert acme.fetch("/v1/influencers/inf-1")["name"] == "Acme One"
    assert acme.fetch("/v1/influencers/inf-1")["tags"] == []
    assert acme.fetch("/v1/content/post-1")["platform"] == "x"
    assert globex.fetch("/v1/content/post-1")["platform"] == "tiktok"
    assert globex.ids("/v1/influencers", tag="g") == ["inf-1"]
    assert acme.ids("/v1/influencers", tag="g") == []
    globex.admin.delete("/v1/content/post-1")
    assert acme.fetch("/v1/content/post-1")["id"] == "post-1"


# -- enrichment ----------------------------------------------------------------------


def register_scenario(acme: Tenant) -> None:
    acme.create("/v1/influencers", ANA)
    acme.create(
        "/v1/influencers",
        {
            "id": "inf-bo",
            "name": "Bo",
            "accounts": [{"platform": "youtube", "account_id": "UC-bo"}],
        },
    )
    acme.create("/v1/campaigns", {"id": "spring", "name": "Spring", "influencers": ["inf-ana"]})
    # "fall" tracks post-2 (registered without a campaign) and post-9 (not registered).
    acme.create("/v1/campaigns", {"id": "fall", "name": "Fall", "content": ["post-2", "post-9"]})
    acme.create(
        "/v1/content",
        {
            "id": "post-1",
            "platform": "instagram",
            "influencer_id": "inf-ana",
            "campaign_id": "spring",
        },
    )
    acme.create("/v1/content", {"id": "post-2", "platform": "youtube", "influencer_id": "inf-bo"})


def test_events_naming_content_or_account_are_counted_for_the_registered_influencer(
    acme: Tenant, globex: Tenant
) -> None:
    register_scenario(acme)
    answer = acme.send(
        [
            by_content("post-1", 1),
            by_content("post-1", 2),
            by_account("ig", "1784", 4),  # the alias is normalised before the lookup
            by_account("tiktok", "tt-ana", 8),
            by_content("post-2", 16, platform="youtube"),
            by_account("youtube", "UC-bo", 32),
            by_content("post-9", 64, platform="tiktok", account_id="tt-ana"),
            by_content("unknown-post", 128),
            by_account("instagram", "unknown-account", 256),
            by_account("youtube", "1784", 512),  # an account id belongs to its platform
            event(influencer_id="inf-own", content_id="unknown-post", value=1024),
            event(influencer_id="inf-own", content_id="post-1", value=2048),
        ]
    )
    assert answer["accepted"] == 9
    assert answer["duplicates"] == 0
    assert answer["rejected"] == [
        {"index": 7, "field": "influencer_id", "error": UNRESOLVED},
        {"index": 8, "field": "influencer_id", "error": UNRESOLVED},
        {"index": 9, "field": "influencer_id", "error": UNRESOLVED},
    ]

    assert acme.likes("influencers", "inf-ana") == 1 + 2 + 4 + 8 + 64
    assert acme.likes("influencers", "inf-bo") == 16 + 32
    assert acme.likes("influencers", "inf-own") == 1024 + 2048
    # The campaign comes from the content, or from a campaign tracking it; an explicit
    # influencer keeps the content's campaign.
    assert acme.likes("campaigns", "spring") == 1 + 2 + 2048
    assert acme.likes("campaigns", "fall") == 16 + 64
    spring = acme.fetch("/v1/campaigns/spring/metrics", period="1h", metrics="likes")
    assert spring["influencers"] == [
        {"influencer_id": "inf-ana", "totals": {"likes": 3}},
        {"influencer_id": "inf-own", "totals": {"likes": 2048}},
    ]

    # Another tenant's registry resolves nothing: globex has none.
    response = globex.ingester.post(
        "/v1/events",
        json=[
            by_content("post-1"),
            by_account("ig", "1784"),
            event(influencer_id=None, content_id=None),
        ],
    )
    assert response.status_code == 400, response.text
    assert response.json()["rejected"] == [
        {"index": 0, "field": "influencer_id", "error": UNRESOLVED},
        {"index": 1, "field": "influencer_id", "error": UNRESOLVED},
        {"index": 2, "field": "influencer_id", "error": "influencer_id is required"},
    ]
    assert globex.likes("influencers", "inf-ana") == 0


def test_a_registry_change_applies_to_the_next_event(acme: Tenant) -> None:
    register_scenario(acme)
    assert acme.send([by_content("post-1", 1)])["accepted"] == 1

    acme.patch("/v1/content/post-1", {"influencer_id": "inf-bo", "campaign_id": None})
    assert acme.send([by_content("post-1", 10)])["accepted"] == 1
    assert acme.likes("influencers", "inf-ana") == 1
    assert acme.likes("influencers", "inf-bo") == 10
    assert acme.likes("campaigns", "spring") == 1

    # A campaign starting to track the content gives it that campaign.
    acme.patch("/v1/campaigns/spring", {"content": ["post-1"]})
    assert acme.send([by_content("post-1", 100)])["accepted"] == 1
    assert acme.likes("campaigns", "spring") == 101
    assert acme.likes("influencers", "inf-bo") == 110

    # An account moved to another influencer.
    acme.patch("/v1/influencers/inf-ana", {"accounts": []})
    acme.patch(
        "/v1/influencers/inf-bo", {"accounts": [{"platform": "instagram", "account_id": "1784"}]}
    )
    assert acme.send([by_account("instagram", "1784", 1000)])["accepted"] == 1
    assert acme.likes("influencers", "inf-bo") == 1110
    assert acme.likes("influencers", "inf-ana") == 1

    # Deleted content resolves nothing any more.
    acme.admin.delete("/v1/content/post-1")
    answer = acme.send([by_content("post-1", 5), by_content("post-2", 7, platform="youtube")])
    assert answer["accepted"] == 1
    assert answer["rejected"] == [{"index": 0, "field": "influencer_id", "error": UNRESOLVED}]
    assert acme.likes("influencers", "inf-bo") == 1117

    # An emptied registry is no registry: an event naming nothing gets the old message.
    for path in (
        "/v1/content/post-2",
        "/v1/campaigns/fall",
        "/v1/campaigns/spring",
        "/v1/influencers/inf-ana",
        "/v1/influencers/inf-bo",
    ):
        assert acme.admin.delete(path).status_code == 200
    response = acme.ingester.post(
        "/v1/events", json=[by_content("post-2"), event(influencer_id=None, content_id=None)]
    )
    assert response.status_code == 400, response.text
    assert response.json()["rejected"] == [
        {"index": 0, "field": "influencer_id", "error": UNRESOLVED},
        {"index": 1, "field": "influencer_id", "error": "influencer_id is required"},
    ]
    assert acme.likes("influencers", "inf-bo") == 1117


def test_enrichment_after_a_restart(make_server: ServerFactory) -> None:
    first = make_server()
    acme = Tenant(first, "acme")
    try:
        register_scenario(acme)
        assert acme.send([by_content("post-1", 3)])["accepted"] == 1
    finally:
        acme.close()
    first.stop()

    second = make_server(data=first.data, keys=first.keys)
    again = Tenant(second, "acme")
    try:
        answer = again.send(
            [by_content("post-1", 5), by_account("youtube", "UC-bo", 7), by_content("nope", 9)]
        )
        assert answer["accepted"] == 2
        assert answer["rejected"] == [{"index": 2, "field": "influencer_id", "error": UNRESOLVED}]
        assert again.likes("influencers", "inf-ana") == 8
        assert again.likes("influencers", "inf-bo") == 7
        assert again.likes("campaigns", "spring") == 8
        assert again.ids("/v1/influencers") == ["inf-ana", "inf-bo"]
        assert again.fetch("/v1/content/post-1")["campaign_id"] == "spring"
    finally:
        again.close()


def _wait_for_twin_reload(server: LiveServer, before: int) -> None:
    assert server.twin is not None
    deadline = time.monotonic() + 30
    while server.twin.reloads() <= before:
        assert time.monotonic() < deadline, "the twin API process did not reload"
        time.sleep(0.01)


@pytest.mark.skipif(not cluster.CLUSTER, reason="one API process on the embedded profile")
def test_a_registry_change_through_one_process_resolves_events_on_the_other(
    server: LiveServer, acme: Tenant
) -> None:
    assert server.twin is not None
    before = server.twin.reloads()
    register_scenario(acme)
    _wait_for_twin_reload(server, before)
    key = server.keys["acme"].ingest
    with httpx.Client(base_url=server.twin.url, headers={"Authorization": f"Bearer {key}"}) as twin:
        sent = twin.post("/v1/events", json=[by_content("post-1", 2), by_content("nope", 1)])
        assert sent.status_code == 200, sent.text
        assert sent.json()["accepted"] == 1
        cluster.settle(server.settings)

        before = server.twin.reloads()
        acme.patch("/v1/content/post-1", {"influencer_id": "inf-bo"})
        _wait_for_twin_reload(server, before)
        sent = twin.post("/v1/events", json=[by_content("post-1", 20, event_id=new_id())])
        assert sent.status_code == 200, sent.text
        assert sent.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
        cluster.settle(server.settings)
    assert acme.likes("influencers", "inf-ana") == 2
    assert acme.likes("influencers", "inf-bo") == 20
    assert acme.likes("campaigns", "spring") == 22


def test_a_large_batch_decoded_in_the_worker_processes_is_enriched_too(acme: Tenant) -> None:
    register_scenario(acme)
    # Past the size decoded in the server process: the decode workers get the directory.
    batch = [by_content("post-1", 1) for _ in range(150)] + [by_account("youtube", "UC-bo", 2)]
    batch.append(by_content("unknown-post", 4))
    assert len(json.dumps(batch)) > 16 * 1024
    answer = acme.send(batch)
    assert answer["accepted"] == 151
    assert answer["rejected"] == [{"index": 151, "field": "influencer_id", "error": UNRESOLVED}]
    assert acme.likes("influencers", "inf-ana") == 150
    assert acme.likes("influencers", "inf-bo") == 2
    assert acme.likes("campaigns", "spring") == 150


def test_concurrent_registrations_of_one_account_leave_one_owner(acme: Tenant) -> None:
    owners: list[list[str]] = []
    for attempt in range(10):
        account = {"platform": "x", "account_id": f"acc-{attempt}"}

        def register(n: int, attempt: int = attempt, account: Any = account) -> int:
            body = {"id": f"inf-{attempt}-{n}", "name": "N", "accounts": [account]}
            return acme.admin.post("/v1/influencers", json=body).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(register, range(8)))
        assert set(codes) <= {201, 409}, codes
        listed = acme.ids("/v1/influencers", q=f"inf-{attempt}-", limit=500)
        owners.append(listed)
    assert [len(o) for o in owners] == [1] * 10, owners


# -- hostile input -------------------------------------------------------------------


def test_times_before_the_year_1000_are_kept_in_rfc3339(acme: Tenant) -> None:
    body = {
        "id": "old",
        "name": "Old",
        "start": "0999-06-01T00:00:00Z",
        "end": "2026-01-01T00:00:00Z",
    }
    response = acme.admin.post("/v1/campaigns", json=body)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:
        assert response.json()["start"] == "0999-06-01T00:00:00.000000Z"
    else:
        assert response.json()["error"]["field"] == "start"


def test_times_out_of_range_in_utc_are_refused_not_a_500(acme: Tenant) -> None:
    acme.create("/v1/influencers", {"id": "inf-1", "name": "One"})
    for path, body, field in [
        ("/v1/campaigns", {"id": "c1", "name": "C", "end": "9999-12-31T23:30:00-01:00"}, "end"),
        ("/v1/campaigns", {"id": "c2", "name": "C", "start": "0001-01-01T00:30:00+01:00"}, "start"),
        (
            "/v1/content",
            {
                "id": "p1",
                "platform": "x",
                "influencer_id": "inf-1",
                "published_at": "9999-12-31T23:30:00-01:00",
            },
            "published_at",
        ),
    ]:
        error(acme.admin.post(path, json=body), 422, "invalid_input", field)
    assert acme.ids("/v1/campaigns") == [] and acme.ids("/v1/content") == []


def test_a_nul_character_in_names_and_searches_is_refused(acme: Tenant) -> None:
    created = acme.admin.post("/v1/influencers", json={"id": "inf-nul", "name": "a\x00b"})
    assert created.status_code == 422, created.text
    assert created.json()["error"]["field"] == "name"
    found = acme.read.get("/v1/influencers", params={"q": "a\x00"})
    assert found.status_code == 422, found.text
    assert found.json()["error"]["field"] == "q"
