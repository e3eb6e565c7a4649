"""Webhook connectors over real HTTP, across platforms: configuration, write-only
secrets, callback URLs that name an existing connector, the body limit, dead-letter
listing, and tenant isolation. Each platform's own rules are in
``test_webhooks_<group>.py`` (meta, video, social, twitch).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from .support import LiveServer, bearer
from .webhooks_support import (
    PLATFORMS,
    SECRET_NAMES,
    Webhooks,
    encode,
    error_of,
    linkedin_signed,
    meta_signed,
    module_server,
    now_s,
    process_urls,
    secrets_for,
    unique,
)

MAX_WEBHOOK_BYTES = 4 * 1024 * 1024
UNRESOLVED = (
    "influencer_id is required, unless content_id or account_id is registered "
    "(/v1/content, /v1/influencers)"
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from module_server(tmp_path_factory, "webhooks")


@pytest.fixture
def acme(srv: LiveServer) -> Iterator[Webhooks]:
    with Webhooks(srv, "acme") as tenant:
        yield tenant


@pytest.fixture
def globex(srv: LiveServer) -> Iterator[Webhooks]:
    with Webhooks(srv, "globex") as tenant:
        yield tenant


def comments(account: str, *comment_ids: str, media: str = "m1") -> bytes:
    changes = [
        {"field": "comments", "value": {"id": c, "text": "nice", "media": {"id": media}}}
        for c in comment_ids
    ]
    return encode(
        {"object": "instagram", "entry": [{"id": account, "time": now_s(), "changes": changes}]}
    )


@pytest.mark.parametrize(
    ("platform", "missing"),
    [(platform, name) for platform in PLATFORMS for name in SECRET_NAMES[platform]],
)
def test_a_connector_without_one_of_its_secrets_is_refused_naming_it(
    acme: Webhooks, platform: str, missing: str
) -> None:
    given = {k: v for k, v in secrets_for(platform).items() if k != missing}
    given["unrelated_secret"] = "kept-out-of-answers-" + unique("")
    answer = acme.admin.post("/v1/admin/connectors", json={"platform": platform, "secrets": given})
    error = error_of(answer, 400, "invalid_input")
    assert error["field"] == f"secrets.{missing}"
    assert error["message"] == f"{platform} connectors need the secrets {missing}"
    for value in given.values():
        assert value not in answer.text


def test_connector_configuration_errors_name_the_field(acme: Webhooks) -> None:
    unknown = acme.admin.post(
        "/v1/admin/connectors", json={"platform": "myspace", "secrets": {"app_secret": "s"}}
    )
    error = error_of(unknown, 400, "invalid_input")
    assert error["field"] == "platform"
    assert error["message"] == (
        "unknown platform 'myspace'; allowed: "
        "instagram, facebook, youtube, tiktok, x, linkedin, twitch"
    )
    none = acme.admin.post("/v1/admin/connectors", json={"platform": "youtube", "secrets": {}})
    assert error_of(none, 400, "invalid_input")["field"] == "secrets.hub_secret"
    empty = acme.admin.post(
        "/v1/admin/connectors", json={"platform": "youtube", "secrets": {"hub_secret": ""}}
    )
    error = error_of(empty, 422, "invalid_input")  # the request's schema: 422
    assert (error["field"], error["message"]) == (
        "secrets.hub_secret",
        "secrets.hub_secret: String should have at least 1 character",
    )

    long = "z" * 1025
    too_long = acme.admin.post(
        "/v1/admin/connectors",
        json={"platform": "x", "secrets": {"consumer_secret": long}},
    )
    assert error_of(too_long, 422, "invalid_input")["field"] == "secrets.consumer_secret"
    assert long not in too_long.text

    # A platform's name is read case-blind; a read key cannot configure connectors.
    secrets = secrets_for("tiktok")
    spelled = acme.admin.post(
        "/v1/admin/connectors", json={"platform": " TikTok ", "secrets": secrets}
    )
    assert spelled.status_code == 201, spelled.text
    assert spelled.json()["platform"] == "tiktok"
    forbidden = acme.read.post(
        "/v1/admin/connectors", json={"platform": "tiktok", "secrets": secrets}
    )
    assert forbidden.status_code == 403, forbidden.text
    assert all(c["platform"] != "myspace" for c in acme.connectors())


def test_secret_values_never_appear_in_any_answer(acme: Webhooks) -> None:
    created = {platform: acme.connector(platform) for platform in PLATFORMS}
    values = [v for c in created.values() for v in c.secrets.values()]

    listed = acme.admin.get("/v1/admin/connectors")
    assert listed.status_code == 200, listed.text
    on_primary = acme.primary.get("/v1/admin/connectors")
    for connector in created.values():
        (shown,) = [c for c in listed.json()["data"] if c["id"] == connector.id]
        assert shown["secrets"] == sorted(connector.secrets)
        assert shown["callback_url"] == connector.url
        assert shown["platform"] == connector.platform
        assert shown["disabled"] is None
        assert shown["health"] == {
            "deliveries": 0,
            "refused": 0,
            "dead_letters": 0,
            "replays": 0,
            "last_success": None,
            "last_error": None,
            "last_error_detail": None,
            "last_error_at": None,
        }

    # Nor in what the callbacks answer, refused or not, nor in dead letters.
    meta = created["instagram"]
    body = comments(unique("1784"), unique("c"))
    answers = [
        listed,
        on_primary,
        acme.handshake(meta, {"hub.mode": "subscribe", "hub.verify_token": "wrong"}),
        acme.deliver(meta, body, meta_signed("wrong", body)),
        acme.deliver(meta, body, meta_signed(meta.secret(), body)),
        acme.admin.get("/v1/admin/dead-letters"),
        acme.deliver(created["linkedin"], b"{}", linkedin_signed("wrong", b"{}")),
        acme.deliver(created["twitch"], b"{}", {}),
        acme.deliver(created["tiktok"], b"{}", {"TikTok-Signature": "t=1,s=00"}),
    ]
    for answer in answers:
        assert answer.status_code < 500, answer.text
        for value in values:
            assert value not in answer.text


def test_callbacks_of_unknown_deleted_or_mismatched_connectors_are_404(
    acme: Webhooks,
) -> None:
    connector = acme.connector("instagram")
    account = unique("1784")
    body = comments(account, unique("c"))
    signed = meta_signed(connector.secret(), body)
    check = {"hub.mode": "subscribe", "hub.verify_token": connector.secrets["verify_token"]}

    for path in (
        "/v1/webhooks/instagram/con_0000000000000000",
        connector.url.replace("instagram", "facebook"),  # the id of another platform
        connector.url.replace("instagram", "myspace"),
    ):
        posted = acme.platform.post(path, content=body, headers=signed)
        assert error_of(posted, 404, "not_found")["field"] == "connector_id"
        shaken = acme.platform.get(path, params={**check, "hub.challenge": "1"})
        assert error_of(shaken, 404, "not_found")["field"] == "connector_id"

    deleted = acme.admin.delete(f"/v1/admin/connectors/{connector.id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": connector.id, "deleted": True}
    assert all(c["id"] != connector.id for c in acme.connectors())
    for attempt in range(2):  # the second goes to the other API process on the cluster
        gone = acme.platform.get(connector.url, params={**check, "hub.challenge": str(attempt)})
        assert error_of(gone, 404, "not_found")["field"] == "connector_id"
    gone = acme.platform.post(connector.url, content=body, headers=signed)
    assert error_of(gone, 404, "not_found")["message"] == (
        f"no instagram connector '{connector.id}'"
    )
    again = acme.admin.delete(f"/v1/admin/connectors/{connector.id}")
    assert error_of(again, 404, "not_found")["field"] == "id"


def test_a_body_over_4_mib_is_413_and_one_of_4_mib_is_read(acme: Webhooks) -> None:
    account = unique("1784")
    influencer = acme.influencer("instagram", account)
    connector = acme.connector("instagram")
    base = comments(account, unique("c"))
    padded = base + b" " * (MAX_WEBHOOK_BYTES - len(base))  # JSON allows trailing space
    assert len(padded) == MAX_WEBHOOK_BYTES
    answer = acme.deliver(connector, padded, meta_signed(connector.secret(), padded))
    assert (answer.status_code, answer.content) == (200, b"")
    assert acme.totals(influencer, "comments") == {"comments": 1}

    over = comments(account, unique("c"))
    over += b" " * (MAX_WEBHOOK_BYTES + 1 - len(over))
    refused = acme.deliver(connector, over, meta_signed(connector.secret(), over))
    error = error_of(refused, 413, "payload_too_large")
    assert error["message"] == f"webhook body exceeds {MAX_WEBHOOK_BYTES} bytes"
    assert error["limit"] == "max_webhook_bytes"
    assert acme.totals(influencer, "comments") == {"comments": 1}
    assert acme.dead_letters(connector) == []


def test_the_413_of_a_webhook_names_the_limit_as_max(acme: Webhooks) -> None:
    connector = acme.connector("instagram")
    over = b"{" + b" " * MAX_WEBHOOK_BYTES + b"}"
    refused = acme.deliver(connector, over, meta_signed(connector.secret(), over))
    error = error_of(refused, 413, "payload_too_large")
    assert (error["limit"], error["max"]) == ("max_webhook_bytes", MAX_WEBHOOK_BYTES)


def test_a_verified_body_that_is_not_json_is_400_and_not_a_dead_letter(acme: Webhooks) -> None:
    connector = acme.connector("instagram")
    body = b"entry=1&changes=2"
    answer = acme.deliver(connector, body, meta_signed(connector.secret(), body))
    error = error_of(answer, 400, "invalid_input")
    assert error["field"] == "body"
    assert error["message"].startswith("the Meta webhook body is not valid JSON")
    assert acme.dead_letters(connector) == []


def test_every_api_process_verifies_and_counts_deliveries(srv: LiveServer, acme: Webhooks) -> None:
    """On the cluster a connector made through one API process is found by the other in
    the store, at once; embedded, the one process answers everything."""
    account = unique("1784")
    influencer = acme.influencer("instagram", account)
    urls = process_urls(srv)
    # Through the primary (the twin has reloaded the influencer and the connector once
    # it answers), then through every other process, used at once everywhere.
    made = [acme.connector("instagram")]
    made += [acme.connector("instagram", url=url) for url in urls[1:]]
    for connector in made:
        for url in urls:
            check = {
                "hub.mode": "subscribe",
                "hub.verify_token": connector.secrets["verify_token"],
                "hub.challenge": url,
            }
            shaken = acme.platform.get(url + connector.url, params=check)
            assert (shaken.status_code, shaken.text) == (200, url)
            body = comments(account, unique("c"), unique("c"))
            signed = meta_signed(connector.secret(), body)
            answer = acme.deliver(connector, body, signed, url=url)
            assert (answer.status_code, answer.content) == (200, b"")
            wrong = acme.deliver(connector, body, meta_signed("wrong", body), url=url)
            assert error_of(wrong, 403, "invalid_signature")["message"] == (
                "X-Hub-Signature-256 does not match"
            )
        assert acme.dead_letters(connector) == []
    assert acme.totals(influencer, "comments") == {"comments": 2 * len(urls) * len(made)}


def test_dead_letters_page_oldest_first_and_filter_by_state(acme: Webhooks) -> None:
    connector = acme.connector("instagram")
    accounts = [unique("1784") for _ in range(3)]
    for account in accounts:
        body = comments(account, unique("c"))
        assert (
            acme.deliver(connector, body, meta_signed(connector.secret(), body)).status_code == 200
        )
    letters = acme.dead_letters(connector, state="open")
    assert [letter["body"].count(a) for letter, a in zip(letters, accounts, strict=True)] == [
        1,
        1,
        1,
    ]
    received = [letter["received_us"] for letter in letters]
    assert received == sorted(received)

    pages: list[str] = []
    cursor = None
    for _ in range(3):
        params: dict[str, Any] = {"connector_id": connector.id, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = acme.admin.get("/v1/admin/dead-letters", params=params)
        assert page.status_code == 200, page.text
        pages += [letter["id"] for letter in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == [letter["id"] for letter in letters]

    first = acme.admin.get(
        "/v1/admin/dead-letters", params={"connector_id": connector.id, "limit": 1}
    )
    mismatched = acme.admin.get(
        "/v1/admin/dead-letters",
        params={
            "connector_id": connector.id,
            "limit": 1,
            "state": "open",
            "cursor": first.json()["next_cursor"],
        },
    )
    assert error_of(mismatched, 400, "invalid_input")["field"] == "cursor"
    bad_state = acme.admin.get("/v1/admin/dead-letters", params={"state": "closed"})
    assert error_of(bad_state, 422, "invalid_input")["field"] == "state"

    acme.influencer("instagram", accounts[1])
    assert acme.replayed(letters[1]["id"])["dead_letter"]["state"] == "resolved"
    assert [d["id"] for d in acme.dead_letters(connector, state="resolved")] == [letters[1]["id"]]
    assert [d["id"] for d in acme.dead_letters(connector, state="open")] == [
        letters[0]["id"],
        letters[2]["id"],
    ]
    missing = acme.replay("dl_00000000000000000000000")
    assert error_of(missing, 404, "not_found")["field"] == "id"

    # Without its connector a dead letter cannot be replayed; it is still listed.
    assert acme.admin.delete(f"/v1/admin/connectors/{connector.id}").status_code == 200
    acme.influencer("instagram", accounts[0])
    orphan = acme.replay(letters[0]["id"])
    error = error_of(orphan, 404, "not_found")
    assert (error["field"], error["message"]) == (
        "connector_id",
        f"the connector '{connector.id}' is gone",
    )
    assert [d["state"] for d in acme.dead_letters(connector)] == ["open", "resolved", "open"]


def test_concurrent_redeliveries_of_one_body_count_once(acme: Webhooks) -> None:
    account = unique("1784")
    influencer = acme.influencer("instagram", account)
    connector = acme.connector("instagram")
    body = comments(account, *(unique("c") for _ in range(5)))
    signed = meta_signed(connector.secret(), body)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: acme.deliver(connector, body, signed), range(8)))
    assert [(a.status_code, a.content) for a in answers] == [(200, b"")] * 8
    assert acme.totals(influencer, "comments") == {"comments": 5}
    assert acme.health(connector)["deliveries"] == 8
    assert acme.dead_letters(connector) == []


def test_a_tenant_cannot_write_into_read_or_replay_another_tenants_webhooks(
    acme: Webhooks, globex: Webhooks
) -> None:
    account = unique("1784")
    influencer = acme.influencer("instagram", account)
    ours = acme.connector("instagram")
    theirs = globex.connector("instagram")

    # globex's connector, even for acme's account, writes into globex only.
    body = comments(account, unique("c"), unique("c"))
    through_globex = globex.deliver(theirs, body, meta_signed(theirs.secret(), body))
    assert (through_globex.status_code, through_globex.content) == (200, b"")
    assert acme.totals(influencer, "comments") == {"comments": 0}
    (letter,) = globex.dead_letters(theirs)
    assert len(letter["reasons"]) == 2
    assert all(r.endswith(UNRESOLVED) for r in letter["reasons"])
    # acme's secret does not open globex's connector, nor the reverse.
    crossed = globex.deliver(theirs, body, meta_signed(ours.secret(), body))
    assert error_of(crossed, 403, "invalid_signature")
    crossed = acme.deliver(ours, body, meta_signed(theirs.secret(), body))
    assert error_of(crossed, 403, "invalid_signature")
    assert acme.totals(influencer, "comments") == {"comments": 0}

    # acme's own dead letter is acme's alone.
    stranger = comments(unique("1784"), unique("c"))
    assert acme.deliver(ours, stranger, meta_signed(ours.secret(), stranger)).status_code == 200
    (acme_letter,) = acme.dead_letters(ours)
    assert all(c["id"] != ours.id for c in globex.connectors())
    assert all(c["id"] != theirs.id for c in acme.connectors())
    assert globex.dead_letters(ours) == []
    assert acme.dead_letters(theirs) == []
    everything = globex.admin.get("/v1/admin/dead-letters", params={"limit": 500})
    assert acme_letter["id"] not in everything.text
    assert error_of(globex.replay(acme_letter["id"]), 404, "not_found")["field"] == "id"
    assert error_of(acme.replay(letter["id"]), 404, "not_found")["field"] == "id"
    deleted = globex.admin.delete(f"/v1/admin/connectors/{ours.id}")
    assert error_of(deleted, 404, "not_found")["field"] == "id"

    # Replayed by globex once acme registers the account: still nothing for acme.
    replay = globex.replayed(letter["id"])
    assert (replay["accepted"], replay["dead_letter"]["state"]) == (0, "open")
    assert acme.totals(influencer, "comments") == {"comments": 0}
    fine = acme.deliver(ours, body, meta_signed(ours.secret(), body))
    assert fine.status_code == 200
    assert acme.totals(influencer, "comments") == {"comments": 2}
    assert acme.dead_letters(ours) == [acme_letter]


def test_payload_excerpts_in_the_ingestion_health_show_to_admin_keys_only(
    srv: LiveServer, acme: Webhooks
) -> None:
    """A dead letter's reasons quote the delivery (comment text, authors); the ingestion
    health, a read route, shows them to keys that also hold the admin scope, and the
    reasons without the quote to the others. So does the connector's last error."""
    account = unique("1784")
    acme.influencer("instagram", account)
    connector = acme.connector("instagram")
    marker = unique("private-comment-")
    change = {"field": "sparkles", "value": {"text": marker, "from": {"username": "ana"}}}
    body = encode(
        {"object": "instagram", "entry": [{"id": account, "time": now_s(), "changes": [change]}]}
    )
    assert acme.deliver(connector, body, meta_signed(connector.secret(), body)).status_code == 200
    why = "unknown Meta webhook field 'sparkles'"
    made = acme.admin.post("/v1/admin/keys", json={"scopes": ["read", "admin"], "name": "ops"})
    assert made.status_code == 201, made.text

    def seen(key: str) -> tuple[dict[str, Any], dict[str, Any], str]:
        with httpx.Client(base_url=srv.url, headers=bearer(key), timeout=30) as client:
            answer = client.get("/v1/ingestion/health")
        assert answer.status_code == 200, answer.text
        (letter,) = [
            d for d in answer.json()["dead_letters"]["open"] if d["connector_id"] == connector.id
        ]
        (entry,) = [c for c in answer.json()["connectors"] if c["id"] == connector.id]
        return letter, entry["health"], answer.text

    letter, health, text = seen(made.json()["key"])
    assert len(letter["reasons"]) == 1 and letter["reasons"][0].startswith(f"{why}: ")
    assert marker in letter["reasons"][0] and marker in health["last_error_detail"]
    assert health["last_error"] == why
    letter, health, text = seen(srv.keys["acme"].read)
    assert letter["reasons"] == [why]
    assert health["last_error"] == why and "last_error_detail" not in health
    assert marker not in text
    # The dead letter itself, body and all, stays an admin's to read and replay.
    (full,) = acme.dead_letters(connector)
    assert marker in full["body"] and marker in full["reasons"][0]
