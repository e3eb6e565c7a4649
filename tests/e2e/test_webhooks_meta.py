"""Meta webhooks over real HTTP: Instagram (comments, story insights) and Facebook Pages
(feed comments and reactions).

The subscription check echoes ``hub.challenge`` for the configured verify token;
deliveries are signed ``X-Hub-Signature-256`` over the raw body with the app secret;
the account (``entry[].id``) names the influencer through the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .support import LiveServer
from .webhooks_support import (
    Webhooks,
    encode,
    grown,
    meta_signed,
    module_server,
    now_s,
    reason,
    unique,
)

UNRESOLVED = (
    "influencer_id is required, unless content_id or account_id is registered "
    "(/v1/content, /v1/influencers)"
)
PREFIX = {"instagram": "ig", "facebook": "fb"}
META = pytest.mark.parametrize("platform", ["instagram", "facebook"])


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from module_server(tmp_path_factory, "meta")


@pytest.fixture
def acme(srv: LiveServer) -> Iterator[Webhooks]:
    with Webhooks(srv, "acme") as tenant:
        yield tenant


def delivery(platform: str, account: str, changes: list[dict[str, Any]]) -> bytes:
    entry = {"id": account, "time": now_s(), "changes": changes}
    return encode({"object": "instagram" if platform == "instagram" else "page", "entry": [entry]})


def comment(platform: str, comment_id: str, media: str, **extra: Any) -> dict[str, Any]:
    """A comment as the platform reports it: Instagram's ``comments`` field, or a
    Facebook Page's ``feed`` comment."""
    if platform == "instagram":
        value = {
            "id": comment_id,
            "text": f"comment {comment_id}",
            "from": {"id": unique("u"), "username": "fan"},
            "media": {"id": media, "media_product_type": "FEED"},
            **extra,
        }
        return {"field": "comments", "value": value}
    value = {
        "item": "comment",
        "verb": "add",
        "comment_id": comment_id,
        "post_id": media,
        "from": {"id": unique("u"), "name": "Fan"},
        "message": f"comment {comment_id}",
        "created_time": now_s(),
        **extra,
    }
    return {"field": "feed", "value": value}


@META
def test_the_subscription_check_echoes_the_challenge_for_the_verify_token(
    acme: Webhooks, platform: str
) -> None:
    connector = acme.connector(platform)
    token = connector.secrets["verify_token"]
    check = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"}
    answer = acme.handshake(connector, check)
    assert (answer.status_code, answer.content) == (200, b"1158201444")
    assert answer.headers["content-type"].startswith("text/plain")

    for wrong in (
        {**check, "hub.verify_token": token + "x"},
        {**check, "hub.verify_token": ""},
        {**check, "hub.mode": "unsubscribe"},
        {"hub.challenge": "1158201444"},
    ):
        refused = acme.handshake(connector, wrong)
        assert (refused.status_code, refused.content) == (403, b"hub.verify_token does not match")


@META
def test_signed_comments_are_counted_once_per_comment_for_the_registered_account(
    acme: Webhooks, platform: str
) -> None:
    account, media = unique("1784"), unique("m")
    influencer = acme.influencer(platform, account)
    connector = acme.connector(platform)
    ids = [unique("c") for _ in range(3)]
    changes = [comment(platform, ids[0], media), comment(platform, ids[1], media)]
    changes.append(comment(platform, ids[2], media, parent_id=ids[0]))  # a reply counts too
    if platform == "instagram":  # a comment during a live video
        live = unique("c")
        changes.append(
            {"field": "live_comments", "value": {"id": live, "text": "wow", "media": {"id": media}}}
        )
        ids.append(live)
    body = delivery(platform, account, changes)
    before = acme.telemetry("deliveries", platform)

    answer = acme.deliver(connector, body, meta_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    assert acme.totals(influencer, "likes,comments") == {"likes": 0, "comments": len(ids)}

    again = acme.deliver(connector, body, meta_signed(connector.secret(), body))
    assert (again.status_code, again.content) == (200, b"")
    assert acme.totals(influencer, "likes,comments") == {"likes": 0, "comments": len(ids)}

    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (2, 0, 0)
    assert health["last_success"] is not None and health["last_error"] is None
    assert grown(before, acme.telemetry("deliveries", platform)) == {"counted": 2}
    assert acme.dead_letters(connector) == []


def test_instagram_story_insights_are_readings_and_unknown_counts_are_skipped(
    acme: Webhooks,
) -> None:
    account, story = unique("1784"), unique("story")
    influencer = acme.influencer("instagram", account)
    connector = acme.connector("instagram")
    value = {
        "media_id": story,
        "impressions": 444,
        "reach": 44,
        "replies": 3,
        "shares": -1,  # fewer than 5: unknown, not a reading
        "taps_forward": 4,
        "exits": 3,
    }
    body = delivery("instagram", account, [{"field": "story_insights", "value": value}])

    answer = acme.deliver(connector, body, meta_signed(connector.secret(), body))
    assert answer.status_code == 200
    metrics = "impressions,reach,comments,shares"
    expected = {"impressions": 444, "reach": 44, "comments": 3, "shares": 0}
    assert acme.totals(influencer, metrics) == expected
    assert acme.deliver(connector, body, meta_signed(connector.secret(), body)).status_code == 200
    assert acme.totals(influencer, metrics) == expected


def test_facebook_feed_removals_subtract_and_reactions_are_likes(acme: Webhooks) -> None:
    page, post = unique("1000"), unique("post_")
    influencer = acme.influencer("facebook", page)
    connector = acme.connector("facebook")
    kept, removed = unique("c"), unique("c")
    fans = [unique("u") for _ in range(2)]
    created = now_s()

    def reaction(fan: str, verb: str, **extra: Any) -> dict[str, Any]:
        value = {
            "item": "reaction",
            "verb": verb,
            "reaction_type": "love",
            "post_id": post,
            "from": {"id": fan},
            "created_time": created,
            **extra,
        }
        return {"field": "feed", "value": value}

    changes = [
        comment("facebook", kept, post),
        comment("facebook", removed, post),
        comment("facebook", removed, post, verb="remove"),
        reaction(fans[0], "add"),
        reaction(fans[1], "add"),
        reaction(fans[0], "remove"),
        reaction(fans[1], "add", comment_id=kept),  # a reaction to a comment: not a like
        {"field": "feed", "value": {"item": "status", "verb": "add", "post_id": post}},
        {"field": "mentions", "value": {"media_id": post}},  # known, not engagement
    ]
    body = delivery("facebook", page, changes)
    answer = acme.deliver(connector, body, meta_signed(connector.secret(), body))
    assert answer.status_code == 200
    assert acme.totals(influencer, "likes,comments") == {"likes": 1, "comments": 1}
    assert acme.deliver(connector, body, meta_signed(connector.secret(), body)).status_code == 200
    assert acme.totals(influencer, "likes,comments") == {"likes": 1, "comments": 1}
    assert acme.dead_letters(connector) == []


@META
def test_wrong_missing_and_foreign_signatures_are_refused_and_nothing_is_counted(
    acme: Webhooks, platform: str
) -> None:
    account = unique("1784")
    influencer = acme.influencer(platform, account)
    connector = acme.connector(platform)
    other = acme.connector(platform)
    body = delivery(platform, account, [comment(platform, unique("c"), unique("m"))])
    good = meta_signed(connector.secret(), body)["X-Hub-Signature-256"]
    before = acme.telemetry("refused", platform)

    wrong = acme.deliver(connector, body, {"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert acme.refused(wrong, 403) == "X-Hub-Signature-256 does not match"
    foreign = acme.deliver(connector, body, meta_signed(other.secret(), body))
    assert acme.refused(foreign, 403) == "X-Hub-Signature-256 does not match"
    tampered = acme.deliver(
        connector, body.replace(b"comment ", b"COMMENT "), {"X-Hub-Signature-256": good}
    )
    assert acme.refused(tampered, 403) == "X-Hub-Signature-256 does not match"
    sha1 = acme.deliver(connector, body, {"X-Hub-Signature": "sha1=" + good[7:47]})
    assert acme.refused(sha1, 401) == "missing header X-Hub-Signature-256"

    assert acme.totals(influencer, "comments") == {"comments": 0}
    assert grown(before, acme.telemetry("refused", platform)) == {"mismatch": 3, "missing": 1}
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (0, 4, 0)
    assert health["last_success"] is None
    assert health["last_error"] == "refused: missing header X-Hub-Signature-256"
    assert acme.dead_letters(connector) == []


@META
def test_an_unknown_field_is_a_dead_letter_and_the_rest_is_counted(
    acme: Webhooks, platform: str
) -> None:
    account, media = unique("1784"), unique("m")
    influencer = acme.influencer(platform, account)
    connector = acme.connector(platform)
    unknown = {"field": "reel_remixes", "value": {"media_id": media, "count": 7}}
    body = delivery(platform, account, [comment(platform, unique("c"), media), unknown])
    before = acme.telemetry("deliveries", platform)

    answer = acme.deliver(connector, body, meta_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    assert acme.totals(influencer, "comments") == {"comments": 1}
    (letter,) = acme.dead_letters(connector)
    fragment = encode(unknown).decode()  # compact, in the order sent
    assert letter["reasons"] == [reason("unknown Meta webhook field 'reel_remixes'", fragment)]
    assert (letter["platform"], letter["state"], letter["replays"]) == (platform, "open", 0)
    assert letter["connector_id"] == connector.id
    assert letter["body"] == body.decode()
    assert grown(before, acme.telemetry("deliveries", platform)) == {"dead_letter": 1}
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (1, 0, 1)
    # The reason in Hypemeter's words; with the excerpt of the delivery, for admins.
    assert health["last_error"] == "unknown Meta webhook field 'reel_remixes'"
    assert health["last_error_detail"] == letter["reasons"][0]

    # The mapping still does not know the field: the replay counts nothing new.
    replay = acme.replayed(letter["id"])
    assert (replay["accepted"], replay["duplicates"]) == (0, 1)
    assert replay["dead_letter"]["state"] == "open"
    assert replay["dead_letter"]["replays"] == 1
    assert replay["dead_letter"]["reasons"] == letter["reasons"]
    assert acme.totals(influencer, "comments") == {"comments": 1}


@META
def test_an_unregistered_account_is_a_dead_letter_until_it_is_registered(
    acme: Webhooks, platform: str
) -> None:
    account, media = unique("1784"), unique("m")
    connector = acme.connector(platform)
    ids = [unique("c"), unique("c")]
    body = delivery(platform, account, [comment(platform, i, media) for i in ids])

    answer = acme.deliver(connector, body, meta_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    (letter,) = acme.dead_letters(connector, state="open")
    prefix = PREFIX[platform]
    assert letter["reasons"] == [f"event {prefix}:comment:{i}: {UNRESOLVED}" for i in ids]
    assert acme.dead_letters(connector, state="resolved") == []

    influencer = acme.influencer(platform, account)
    assert acme.totals(influencer, "comments") == {"comments": 0}
    replay = acme.replayed(letter["id"])
    assert (replay["accepted"], replay["duplicates"]) == (2, 0)
    assert replay["dead_letter"]["state"] == "resolved"
    assert replay["dead_letter"]["replays"] == 1
    assert replay["dead_letter"]["id"] == letter["id"]
    assert acme.totals(influencer, "comments") == {"comments": 2}

    twice = acme.replayed(letter["id"])
    assert (twice["accepted"], twice["duplicates"]) == (0, 2)
    assert (twice["dead_letter"]["state"], twice["dead_letter"]["replays"]) == ("resolved", 2)
    assert acme.totals(influencer, "comments") == {"comments": 2}
    assert acme.dead_letters(connector, state="open") == []
    assert [d["id"] for d in acme.dead_letters(connector, state="resolved")] == [letter["id"]]
