"""Keys narrowed by limits, over real HTTP and the CLI.

An ingest key's limits (platforms, metrics, influencers, campaigns, a value cap) bind
every event it writes; event ids in the platform connectors' namespace are refused
from keys, so a key cannot claim a webhook delivery before it arrives; every tenant
has a bound on the value of one event per metric. A read key limited to influencers
or campaigns reads only their numbers, on every read route, JSON and CSV alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import LiveServer, cli, event, start_server
from .webhooks_support import Webhooks, encode, meta_signed, now_s, unique

SERIES = {"period": "2h", "granularity": "hour"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("key-limits"))
    yield live
    live.stop()


def admin_of(srv: LiveServer, tenant: str = "acme") -> httpx.Client:
    return srv.client(srv.keys[tenant].admin)


def new_key(srv: LiveServer, scopes: list[str], limits: dict[str, Any]) -> str:
    with admin_of(srv) as admin:
        made = admin.post("/v1/admin/keys", json={"scopes": scopes, "limits": limits})
    assert made.status_code == 201, made.text
    secret: str = made.json()["key"]
    return secret


def refused(response: httpx.Response, status: int, field: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["field"] == field, error
    message: str = error["message"]
    return message


# -- keys with limits ---------------------------------------------------------------------


def test_a_key_is_created_with_limits_shown_in_the_list(srv: LiveServer) -> None:
    limits = {
        "platforms": ["ios", "web"],
        "metrics": ["link-click"],
        "influencers": ["inf-a"],
        "campaigns": ["c1"],
        "max_value": 10,
    }
    expected = {
        "platforms": ["app", "web"],
        "metrics": ["clicks"],
        "influencers": ["inf-a"],
        "campaigns": ["c1"],
        "max_value": 10.0,
    }
    with admin_of(srv) as admin:
        made = admin.post("/v1/admin/keys", json={"scopes": ["ingest"], "limits": limits})
        assert made.status_code == 201, made.text
        assert made.json()["limits"] == expected
        listed = {k["id"]: k["limits"] for k in admin.get("/v1/admin/keys").json()["data"]}
    assert listed[made.json()["id"]] == expected
    assert listed[srv.keys["acme"].ids["read"]] is None


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"scopes": ["ingest"], "limits": {"platforms": ["myspace"]}}, 400, "limits.platforms",
         "unknown platform 'myspace'"),
        ({"scopes": ["ingest"], "limits": {"influencers": []}}, 400, "limits.influencers",
         "non-empty list"),
        ({"scopes": ["ingest"], "limits": {"max_value": -1}}, 400, "limits.max_value", "above 0"),
        ({"scopes": ["read"], "limits": {"max_value": 5}}, 400, "limits",
         "influencers and campaigns only"),
        ({"scopes": ["admin"], "limits": {"campaigns": ["c1"]}}, 400, "limits",
         "admin key cannot be limited"),
        ({"scopes": ["read"], "limits": {"tenants": ["globex"]}}, 422, "limits.tenants",
         "Extra inputs"),
        ({"scopes": ["ingest"], "limits": {"campaigns": [f"c{n}" for n in range(1001)]}}, 400,
         "limits.campaigns", "at most 1000"),
    ],
)  # fmt: skip
def test_bad_limits_are_refused_naming_the_member(
    srv: LiveServer, body: dict[str, Any], status: int, field: str, words: str
) -> None:
    with admin_of(srv) as admin:
        before = len(admin.get("/v1/admin/keys").json()["data"])
        answer = admin.post("/v1/admin/keys", json=body)
        assert words in refused(answer, status, field)
        assert len(admin.get("/v1/admin/keys").json()["data"]) == before


def test_the_cli_creates_and_lists_limited_keys_and_imports_connector_ids(
    tmp_path: Path,
) -> None:
    data = str(tmp_path / "data")
    cli("tenants", "create", "acme", "--data", data)
    made = cli(
        "keys", "create", "--tenant", "acme", "--scopes", "read", "--data", data,
        "--limit-influencers", "inf-a, inf-b", "--limit-campaigns", "c1",
    )  # fmt: skip
    lines = made.stdout.strip().splitlines()
    key_id = lines[0].split()[1]
    shown = '{"influencers":["inf-a","inf-b"],"campaigns":["c1"]}'
    assert lines[1] == f"limited to {shown}"
    bad = cli(
        "keys", "create", "--tenant", "acme", "--scopes", "read", "--data", data,
        "--max-value", "5", check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "influencers and campaigns only" in bad.stderr
    plain = cli("keys", "create", "--tenant", "acme", "--scopes", "ingest", "--data", data)
    plain_id = plain.stdout.split()[1]
    listed = {
        row.split("\t")[0]: row.split("\t")[1:]
        for row in cli("keys", "list", "--data", data).stdout.splitlines()
    }
    assert listed == {
        key_id: ["acme", "read", "active", "", shown],
        plain_id: ["acme", "ingest", "active", ""],
    }

    # An import replays events a deployment accepted: connector ids and values over the
    # default bounds come back as they were.
    lines_in = [
        event(event_id="ig:comment:17865799348089039", metric="comments"),
        event(metric="conversions", value=1e15),
    ]
    (tmp_path / "in.ndjson").write_text("".join(json.dumps(e) + "\n" for e in lines_in))
    done = cli("import", str(tmp_path / "in.ndjson"), "--tenant", "acme", "--data", data)
    assert done.stdout.strip() == "imported 2 lines into acme: 2 accepted, 0 duplicates, 0 rejected"


# -- ingest ---------------------------------------------------------------------------------

SDK_LIMITS = {
    "platforms": ["app"],
    "metrics": ["clicks"],
    "influencers": ["inf-sdk"],
    "campaigns": ["c-sdk"],
    "max_value": 10,
}


def sdk_events() -> list[dict[str, Any]]:
    good = {"platform": "app", "metric": "click", "influencer_id": "inf-sdk",
            "campaign_id": "c-sdk", "content_id": None, "value": 2}  # fmt: skip
    return [
        event(**good),
        event(**{**good, "platform": "web"}),
        event(**{**good, "metric": "likes"}),
        event(**{**good, "influencer_id": "inf-other"}),
        event(**{**good, "campaign_id": "c-other"}),
        event(**{**good, "campaign_id": None}),
        event(**{**good, "value": 11}),
        event(**{**good, "event_id": f"ig:comment:{unique('')}"}),
        event(**{**good, "value": 10}),  # the cap itself is allowed
    ]


SDK_REJECTED = [
    (1, "platform", "platform 'web' is outside this key's limits.platforms"),
    (2, "metric", "metric 'likes' is outside this key's limits.metrics"),
    (3, "influencer_id", "influencer_id 'inf-other' is outside this key's limits.influencers"),
    (4, "campaign_id", "campaign_id 'c-other' is outside this key's limits.campaigns"),
    (5, "campaign_id", "campaign_id is required: this key may write only events of its "
                       "campaigns (limits.campaigns)"),
    (6, "value", "value 11 is above this key's limits.max_value (10)"),
]  # fmt: skip


def rejected_of(answer: httpx.Response) -> list[tuple[int, str, str]]:
    return [(r["index"], r["field"], r["error"]) for r in answer.json()["rejected"]]


def test_an_ingest_keys_limits_bind_every_event_it_writes(srv: LiveServer) -> None:
    key = new_key(srv, ["ingest"], SDK_LIMITS)
    with srv.client(key) as sdk:
        batch = sdk.post("/v1/events", json=sdk_events())
        assert batch.status_code == 200, batch.text
        assert (batch.json()["accepted"], batch.json()["duplicates"]) == (2, 0)
        rejected = rejected_of(batch)
        assert rejected[:6] == SDK_REJECTED
        assert [(i, f) for i, f, _ in rejected[6:]] == [(7, "event_id")]

        ndjson = "".join(json.dumps(e) + "\n" for e in sdk_events())
        lines = sdk.post(
            "/v1/events", content=ndjson, headers={"Content-Type": "application/x-ndjson"}
        )
        assert lines.status_code == 200, lines.text
        assert lines.json()["accepted"] == 2
        assert rejected_of(lines)[:6] == SDK_REJECTED

        body = {"influencer_id": "inf-sdk", "campaign_id": "c-sdk", "value": 3}
        assert sdk.post("/v1/track/link-click", json=body).json()["accepted"] == 1
        for path, extra, fault in (
            ("/v1/track/likes", {}, SDK_REJECTED[1][1:]),
            ("/v1/track/click", {"platform": "web"}, SDK_REJECTED[0][1:]),
            ("/v1/track/click", {"value": 50}, ("value", "value 50 is above this key's "
                                                "limits.max_value (10)")),
        ):  # fmt: skip
            answer = sdk.post(path, json={**body, **extra})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "all_events_rejected"
            assert rejected_of(answer) == [(0, *fault)]
        claimed = sdk.post("/v1/track/click", json={**body, "event_id": "poll:app:x:clicks:1"})
        assert rejected_of(claimed)[0][:2] == (0, "event_id")

    # Only what was accepted counts: 2 + 10 from each batch, 3 from the tracked click.
    with srv.client(srv.keys["acme"].read) as reader:
        answer = reader.get(
            "/v1/influencers/inf-sdk/metrics", params={**SERIES, "metrics": "clicks,likes"}
        )
    assert answer.json()["totals"] == {"clicks": 27, "likes": 0}


def test_the_default_bound_refuses_1e15_conversions_and_an_admin_may_change_it(
    srv: LiveServer,
) -> None:
    """On tenant globex, so that its bounds change nothing for the other tests."""
    keys = srv.keys["globex"]
    big = event(influencer_id="inf-g", metric="conversions", value=1e15)
    with srv.client(keys.ingest) as sdk, srv.client(keys.admin) as admin:
        answer = sdk.post("/v1/events", json=[big, event(influencer_id="inf-g")])
        assert answer.status_code == 200, answer.text
        assert rejected_of(answer) == [
            (0, "value", "value 1e+15 is above the limit of 1e+06 per increment of "
                         "conversions; an admin may change it (PUT /v1/admin/value-limits)"),
        ]  # fmt: skip
        reading = event(influencer_id="inf-g", metric="followers", kind="snapshot", value=2e10)
        assert rejected_of(sdk.post("/v1/events", json=[reading]))[0][:2] == (0, "value")

        shown = admin.get("/v1/admin/value-limits").json()["metrics"]
        assert shown["conversions"] == {"max_delta": 1e6, "max_snapshot": 1e10, "default": True}
        assert shown["views"] == {"max_delta": 1e9, "max_snapshot": 1e12, "default": True}

        raised = admin.put(
            "/v1/admin/value-limits", json={"metrics": {"conversion": {"max_delta": 5e7}}}
        )
        assert raised.status_code == 200, raised.text
        assert raised.json()["metrics"]["conversions"] == {
            "max_delta": 5e7, "max_snapshot": 1e10, "default": False
        }  # fmt: skip
        assert admin.get("/v1/admin/value-limits").json() == raised.json()
        fits = event(influencer_id="inf-g", metric="conversions", value=3e7)
        assert sdk.post("/v1/events", json=[fits, big]).json()["accepted"] == 1

        for body, status, field in (
            ({"conversions": {"max_delta": 2e15}}, 400, "metrics.conversions.max_delta"),
            ({"conversions": {"max_snapshot": 0}}, 400, "metrics.conversions.max_snapshot"),
            ({"telepathy": {"max_delta": 5}}, 400, "metrics.telepathy"),
            ({"likes": {"max_delta": 5, "cap": 1}}, 422, "metrics.likes.cap"),
        ):
            refused(admin.put("/v1/admin/value-limits", json={"metrics": body}), status, field)
        with srv.client(keys.read) as reader:
            put = reader.put("/v1/admin/value-limits", json={"metrics": {"likes": None}})
            refused(put, 403, "scope")

        reset = admin.put("/v1/admin/value-limits", json={"metrics": {"conversions": None}})
        assert reset.json()["metrics"]["conversions"]["default"] is True
        assert rejected_of(sdk.post("/v1/events", json=[fits, event(influencer_id="inf-g")]))[0][
            :2
        ] == (0, "value")


# -- the connectors' id namespace -----------------------------------------------------------


def test_a_key_cannot_claim_a_webhook_delivery_before_it_arrives(srv: LiveServer) -> None:
    """The issue's scenario: an ingest key sends ``ig:comment:<id>`` first; the claim is
    refused, and the real delivery of that comment then counts, on its own media."""
    with Webhooks(srv, "acme") as acme:
        account, media, comment_id = unique("1784"), unique("m"), unique("c")
        influencer = acme.influencer("instagram", account)
        connector = acme.connector("instagram")
        claim = event(
            event_id=f"ig:comment:{comment_id}",
            influencer_id=influencer,
            platform="instagram",
            metric="comments",
            content_id="claimed-media",
            text="first!",
        )
        answer = srv.post_events(srv.keys["acme"].ingest, [claim])
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "all_events_rejected"
        ((index, field, error),) = rejected_of(answer)
        assert (index, field) == (0, "event_id")
        assert error.startswith(f"event_id 'ig:comment:{comment_id}' is in the namespace of ")

        value = {"id": comment_id, "text": "real", "from": {"id": "u1"}, "media": {"id": media}}
        entry = {"id": account, "time": now_s(), "changes": [{"field": "comments", "value": value}]}
        body = encode({"object": "instagram", "entry": [entry]})
        delivered = acme.deliver(connector, body, meta_signed(connector.secret(), body))
        assert delivered.status_code == 200, delivered.text
        assert acme.totals(influencer, "comments") == {"comments": 1}
        by_content = acme.read.get(
            "/v1/metrics/aggregate",
            params={"metric": "comments", "group_by": "content", "influencer_id": influencer,
                    "period": "2h"},
        )  # fmt: skip
        assert by_content.json()["data"] == [{"key": media, "value": 1}]


# -- reads ----------------------------------------------------------------------------------


class World:
    """Two influencers in two campaigns, a key of each narrowing and an unlimited one."""

    def __init__(self, srv: LiveServer) -> None:
        self.srv = srv
        self.by_influencer = new_key(srv, ["read"], {"influencers": ["inf-a"]})
        self.by_campaign = new_key(srv, ["read"], {"campaigns": ["c1"]})
        self.by_both = new_key(srv, ["read"], {"influencers": ["inf-a"], "campaigns": ["c1"]})
        self.unlimited = srv.keys["acme"].read

    def get(self, key: str, path: str, params: dict[str, str]) -> httpx.Response:
        with self.srv.client(key) as client:
            return client.get(path, params=params)


@pytest.fixture(scope="module")
def world(srv: LiveServer) -> World:
    with admin_of(srv) as admin:
        for body in (
            {"id": "inf-a", "name": "A"},
            {"id": "inf-b", "name": "B"},
        ):
            assert admin.post("/v1/influencers", json=body).status_code == 201
        for body in ({"id": "c1", "name": "One"}, {"id": "c2", "name": "Two"}):
            assert admin.post("/v1/campaigns", json=body).status_code == 201
        content = {"id": "post-a", "platform": "instagram", "influencer_id": "inf-a"}
        assert admin.post("/v1/content", json=content).status_code == 201
    sent = [
        event(influencer_id="inf-a", campaign_id="c1", content_id="post-a", value=3,
              user_id="fan-1"),
        event(influencer_id="inf-a", campaign_id="c2", content_id="post-a", value=5),
        event(influencer_id="inf-b", campaign_id="c1", content_id="post-b", value=7,
              user_id="fan-2"),
        event(influencer_id="inf-a", metric="comments", content_id="post-a", text="=1+1"),
    ]  # fmt: skip
    assert srv.post_events(srv.keys["acme"].ingest, sent).json()["accepted"] == 4
    return World(srv)


LIKES = {**SERIES, "metrics": "likes,comments"}
AGGREGATE = {"metric": "likes", "period": "2h"}
# (path, params, status for a key limited to inf-a, to c1, to both)
READS: list[tuple[str, dict[str, str], int, int, int]] = [
    ("/v1/influencers/inf-a/metrics", LIKES, 200, 403, 403),
    ("/v1/influencers/inf-a/metrics", {**LIKES, "campaign_id": "c1"}, 200, 200, 200),
    ("/v1/influencers/inf-a/metrics", {**LIKES, "campaign_id": "c2"}, 200, 403, 403),
    ("/v1/influencers/inf-b/metrics", LIKES, 403, 403, 403),
    ("/v1/influencers/inf-b/metrics", {**LIKES, "campaign_id": "c1"}, 403, 200, 403),
    ("/v1/campaigns/c1/metrics", LIKES, 403, 200, 403),
    ("/v1/campaigns/c2/metrics", LIKES, 403, 403, 403),
    ("/v1/metrics/series", LIKES, 403, 403, 403),
    ("/v1/metrics/series", {**LIKES, "campaign_id": "c1"}, 403, 200, 403),
    ("/v1/metrics/aggregate", {**AGGREGATE, "group_by": "campaign"}, 403, 403, 403),
    ("/v1/metrics/aggregate", {**AGGREGATE, "group_by": "campaign", "influencer_id": "inf-a"},
     200, 403, 403),
    ("/v1/metrics/aggregate", {**AGGREGATE, "group_by": "influencer", "campaign_id": "c1"},
     403, 200, 403),
    ("/v1/metrics/aggregate", {**AGGREGATE, "group_by": "day", "influencer_id": "inf-a",
                               "campaign_id": "c1"}, 200, 200, 200),
    ("/v1/metrics/aggregate", {**AGGREGATE, "group_by": "day", "influencer_id": "inf-b"},
     403, 403, 403),
    ("/v1/content/trending", {"min_interactions": "0"}, 403, 403, 403),
    ("/v1/users/activity", {}, 403, 403, 403),
    ("/v1/leaderboard", {"metric": "likes"}, 403, 403, 403),
]  # fmt: skip
REGISTRY: list[tuple[str, int, int, int]] = [
    ("/v1/influencers", 403, 403, 403),
    ("/v1/influencers/inf-a", 200, 403, 403),
    ("/v1/influencers/inf-b", 403, 403, 403),
    ("/v1/campaigns", 403, 403, 403),
    ("/v1/campaigns/c1", 403, 200, 403),
    ("/v1/campaigns/c2", 403, 403, 403),
    ("/v1/content", 403, 403, 403),
    ("/v1/content/post-a", 403, 403, 403),
    ("/v1/ingestion/health", 403, 403, 403),
]


def _limit_named(answer: httpx.Response) -> str:
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    error = answer.json()["error"]
    assert error["code"] == "forbidden"
    field: str = error["field"]
    return field


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize(("path", "params", "by_inf", "by_camp", "by_both"), READS)
def test_a_narrowed_read_key_sees_only_its_numbers_on_every_query(
    world: World,
    fmt: str,
    path: str,
    params: dict[str, str],
    by_inf: int,
    by_camp: int,
    by_both: int,
) -> None:
    query = {**params, "format": fmt}
    full = world.get(world.unlimited, path, query)
    assert full.status_code == 200, full.text
    for key, status in (
        (world.by_influencer, by_inf),
        (world.by_campaign, by_camp),
        (world.by_both, by_both),
    ):
        answer = world.get(key, path, query)
        assert answer.status_code == status, (path, query, answer.text)
        if status == 403:
            assert _limit_named(answer) in {"limits.influencers", "limits.campaigns"}
            continue
        if fmt == "csv":
            assert answer.headers["content-type"].startswith("text/csv")
            assert answer.text == full.text  # the same numbers as any key of the tenant
        else:
            mine, theirs = answer.json(), full.json()
            mine.pop("statistics"), theirs.pop("statistics")
            assert mine == theirs


@pytest.mark.parametrize(("path", "by_inf", "by_camp", "by_both"), REGISTRY)
def test_a_narrowed_read_key_sees_only_its_registry_entries(
    world: World, path: str, by_inf: int, by_camp: int, by_both: int
) -> None:
    assert world.get(world.unlimited, path, {}).status_code == 200
    for key, status in (
        (world.by_influencer, by_inf),
        (world.by_campaign, by_camp),
        (world.by_both, by_both),
    ):
        answer = world.get(key, path, {})
        assert answer.status_code == status, (path, answer.text)
        if status == 403:
            assert _limit_named(answer) in {"limits.influencers", "limits.campaigns"}


def test_the_numbers_a_narrowed_key_reads_are_its_own(world: World) -> None:
    def totals(key: str, path: str, **extra: str) -> dict[str, Any]:
        answer = world.get(key, path, {**LIKES, **extra})
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()["totals"]
        return found

    assert totals(world.by_influencer, "/v1/influencers/inf-a/metrics") == {
        "likes": 8, "comments": 1
    }  # fmt: skip
    assert totals(world.by_campaign, "/v1/campaigns/c1/metrics") == {"likes": 10, "comments": 0}
    both = totals(world.by_both, "/v1/influencers/inf-a/metrics", campaign_id="c1")
    assert both == {"likes": 3, "comments": 0}
    refusal = world.get(world.by_influencer, "/v1/influencers/inf-b/metrics", LIKES)
    assert refusal.json()["error"]["message"] == (
        "influencer_id 'inf-b' is outside this key's limits.influencers"
    )
    wide = world.get(world.by_campaign, "/v1/leaderboard", {})
    assert wide.json()["error"] == {
        "code": "forbidden",
        "field": "limits.campaigns",
        "message": "this key may read only some campaigns (limits.campaigns); GET "
        "/v1/leaderboard reads across them, so it is not open to this key",
    }


PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/docs"}


def test_no_read_route_answers_a_narrowed_key_about_others(world: World) -> None:
    """Every GET route of the API, with ids that are not the key's: none answers 2xx
    but the public probes; a route added later is closed to narrowed keys until it says
    how it is narrowed."""
    with world.srv.client() as anonymous:
        paths = anonymous.get("/openapi.json").json()["paths"]
    checked = []
    for template, operations in paths.items():
        if "get" not in operations or template in PUBLIC:
            continue
        path = template.replace("{", "").replace("}", "")  # {influencer_id} -> influencer_id
        with (
            world.srv.client(world.by_both) as client,
            client.stream(
                "GET", path, params={"influencer_id": "inf-b", "campaign_id": "c2"}
            ) as answer,
        ):
            checked.append((template, answer.status_code))
    assert checked, paths
    assert [c for c in checked if c[1] < 300] == [], checked
    assert len(checked) >= 20, checked
