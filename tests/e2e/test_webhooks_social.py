"""X (Account Activity) and LinkedIn (organization social actions) webhooks over real
HTTP: their handshakes, signatures, mappings to likes, comments and shares, and
dead letters.

X signs ``sha256=<base64 HMAC>`` of the body with the consumer secret and answers its
CRC with the same HMAC of the token; LinkedIn signs ``hmacsha256=`` + body (hex) with
the client secret and answers ``challengeCode`` with its hex HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .support import LiveServer
from .webhooks_support import (
    Webhooks,
    encode,
    grown,
    linkedin_signed,
    module_server,
    reason,
    unique,
    x_crc,
    x_signed,
)

UNRESOLVED = (
    "influencer_id is required, unless content_id or account_id is registered "
    "(/v1/content, /v1/influencers)"
)
METRICS = "likes,comments,shares"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from module_server(tmp_path_factory, "social")


@pytest.fixture
def acme(srv: LiveServer) -> Iterator[Webhooks]:
    with Webhooks(srv, "acme") as tenant:
        yield tenant


def number() -> str:
    return str(random.randrange(10**17, 10**18))


def now_ms(seconds_ago: float = 60.0) -> int:
    return int((time.time() - seconds_ago) * 1000)


# -- X ------------------------------------------------------------------------


def user(user_id: str, handle: str) -> dict[str, Any]:
    return {"id": int(user_id), "id_str": user_id, "screen_name": handle}


def tweet(author: str, handle: str = "fan", **extra: Any) -> dict[str, Any]:
    tweet_id = number()
    return {
        "id_str": tweet_id,
        "text": f"tweet {tweet_id}",
        "timestamp_ms": str(now_ms()),
        "user": user(author, handle),
        **extra,
    }


def like(owner: str, post: str, fan: str) -> dict[str, Any]:
    status = {"id_str": post, "user": user(owner, "owner")}
    return {
        "id": unique(""),
        "created_at": "Mon Mar 26 16:33:26 +0000 2018",
        "timestamp_ms": now_ms(),
        "favorited_status": status,
        "user": user(fan, "fan"),
    }


def activity(owner: str, **keys: Any) -> bytes:
    return encode({"for_user_id": owner, **keys})


def test_x_crc_answers_the_signed_response_token(acme: Webhooks) -> None:
    connector = acme.connector("x")
    answer = acme.handshake(connector, {"crc_token": "crc-challenge-123"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"response_token": x_crc(connector.secret(), "crc-challenge-123")}
    missing = acme.handshake(connector, {})
    assert (missing.status_code, missing.content) == (400, b"missing crc_token")


def test_x_engagement_on_the_users_posts_is_counted_once(acme: Webhooks) -> None:
    owner, fan, stranger, post = number(), number(), number(), number()
    influencer = acme.influencer("x", owner)
    connector = acme.connector("x")
    theirs = {"id_str": number(), "user": user(stranger, "stranger")}
    ours = {"id_str": post, "user": user(owner, "owner")}
    published_ms = now_ms(30)
    own = tweet(owner, "owner", timestamp_ms=str(published_ms))
    body = activity(
        owner,
        favorite_events=[like(owner, post, fan), like(owner, post, number())],
        tweet_create_events=[
            tweet(fan, in_reply_to_status_id_str=post, in_reply_to_user_id_str=owner),
            tweet(fan, retweeted_status=ours),
            tweet(fan, quoted_status=ours),
            tweet(owner, "owner", in_reply_to_status_id_str=post, in_reply_to_user_id_str=owner),
            tweet(fan, retweeted_status=theirs),  # not the user's post
            tweet(fan, in_reply_to_status_id_str=number(), in_reply_to_user_id_str=stranger),
            own,
        ],
        follow_events=[{"type": "follow"}],  # known, nothing recorded
    )
    before = acme.telemetry("deliveries", "x")

    answer = acme.deliver(connector, body, x_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    expected = {"likes": 2, "comments": 2, "shares": 2}
    assert acme.totals(influencer, METRICS) == expected
    item = acme.content(own["id_str"])
    assert item.status_code == 200, item.text
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(published_ms // 1000))
    shown = {
        k: item.json()[k] for k in ("platform", "influencer_id", "url", "type", "published_at")
    }
    assert shown == {
        "platform": "x",
        "influencer_id": influencer,
        "url": f"https://x.com/owner/status/{own['id_str']}",
        "type": "post",
        "published_at": f"{stamp}.{published_ms % 1000:03d}000Z",
    }

    again = acme.deliver(connector, body, x_signed(connector.secret(), body))
    assert (again.status_code, again.content) == (200, b"")
    assert acme.totals(influencer, METRICS) == expected
    assert [c["id"] for c in acme.content_of(influencer)] == [own["id_str"]]
    assert grown(before, acme.telemetry("deliveries", "x")) == {"counted": 2}
    assert acme.dead_letters(connector) == []


def test_x_refuses_wrong_and_missing_signatures(acme: Webhooks) -> None:
    owner, post = number(), number()
    influencer = acme.influencer("x", owner)
    connector = acme.connector("x")
    body = activity(owner, favorite_events=[like(owner, post, number())])
    before = acme.telemetry("refused", "x")

    wrong = acme.deliver(connector, body, x_signed("another-consumer-secret", body))
    assert acme.refused(wrong, 403) == "X-Twitter-Webhooks-Signature does not match"
    as_hex = "sha256=" + hmac.new(connector.secret().encode(), body, hashlib.sha256).hexdigest()
    hexed = acme.deliver(connector, body, {"X-Twitter-Webhooks-Signature": as_hex})
    assert acme.refused(hexed, 403) == "X-Twitter-Webhooks-Signature does not match"
    missing = acme.deliver(connector, body, {})
    assert acme.refused(missing, 401) == "missing header X-Twitter-Webhooks-Signature"

    assert acme.totals(influencer, METRICS) == {"likes": 0, "comments": 0, "shares": 0}
    assert grown(before, acme.telemetry("refused", "x")) == {"mismatch": 2, "missing": 1}
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (0, 3, 0)
    assert health["last_error"] == "refused: missing header X-Twitter-Webhooks-Signature"


def test_x_unknown_keys_and_unknown_users_are_dead_letters(acme: Webhooks) -> None:
    owner, post = number(), number()
    connector = acme.connector("x")
    poll = {"poll_vote_events": [{"id": "1"}]}
    unknown = activity(owner, **poll)
    assert (
        acme.deliver(connector, unknown, x_signed(connector.secret(), unknown)).status_code == 200
    )
    likes = [like(owner, post, number()), like(owner, post, number())]
    body = activity(owner, favorite_events=likes)
    assert acme.deliver(connector, body, x_signed(connector.secret(), body)).status_code == 200

    first, second = acme.dead_letters(connector)
    assert first["reasons"] == [
        reason("unknown Account Activity key 'poll_vote_events'", encode(poll).decode())
    ]
    assert second["reasons"] == [f"event x:like:{f['id']}: {UNRESOLVED}" for f in likes]

    influencer = acme.influencer("x", owner)
    for replays, counts in ((1, (2, 0)), (2, (0, 2))):
        replay = acme.replayed(second["id"])
        assert (replay["accepted"], replay["duplicates"]) == counts
        assert (replay["dead_letter"]["state"], replay["dead_letter"]["replays"]) == (
            "resolved",
            replays,
        )
        assert acme.totals(influencer, METRICS) == {"likes": 2, "comments": 0, "shares": 0}
    assert [d["id"] for d in acme.dead_letters(connector, state="open")] == [first["id"]]


def test_x_revoke_disables_the_connector(acme: Webhooks) -> None:
    owner = number()
    connector = acme.connector("x")
    revoke = {"revoke": {"date_time": "2026-11-20T14:00:00Z", "source": {"user_id": owner}}}
    body = activity(owner, user_event=revoke)
    assert acme.deliver(connector, body, x_signed(connector.secret(), body)).status_code == 200
    (shown,) = [c for c in acme.connectors() if c["id"] == connector.id]
    assert (
        shown["disabled"] == f"X user {owner} revoked the app's authorization (user_event.revoke)"
    )


# -- LinkedIn -------------------------------------------------------------------


def notification(org: str, post: str, action: str, **extra: Any) -> dict[str, Any]:
    return {
        "notificationId": int(number()),
        "action": action,
        "organizationalEntity": org,
        "sourcePost": post,
        "lastModifiedAt": now_ms(),
        "subscriber": "urn:li:person:zLqTygBP8S",
        **extra,
    }


def batch(
    *notifications: dict[str, Any], kind: str = "ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS"
) -> bytes:
    return encode({"type": kind, "notifications": list(notifications)})


def organization() -> tuple[str, str]:
    return f"urn:li:organization:{number()}", f"urn:li:activity:{number()}"


def test_linkedin_validation_answers_the_hmac_of_the_challenge_code(acme: Webhooks) -> None:
    connector = acme.connector("linkedin")
    code = "890e4fe6-0f5d-4cb3-8b94-e2c5e0d53f8b"
    answer = acme.handshake(connector, {"challengeCode": code})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    expected = hmac.new(connector.secret().encode(), code.encode(), hashlib.sha256).hexdigest()
    assert answer.json() == {"challengeCode": code, "challengeResponse": expected}
    missing = acme.handshake(connector, {})
    assert (missing.status_code, missing.content) == (400, b"missing challengeCode")


def test_linkedin_social_actions_are_counted_as_linkedin_counts_them(acme: Webhooks) -> None:
    org, post = organization()
    influencer = acme.influencer("linkedin", org)
    connector = acme.connector("linkedin")
    comment = {
        "decoratedGeneratedActivity": {
            "comment": {"owner": "urn:li:person:a", "text": "Great post"}
        }
    }
    body = batch(
        notification(org, post, "LIKE"),
        notification(org, post, "LIKE"),
        notification(org, post, "COMMENT", **comment),
        notification(org, post, "ADMIN_COMMENT", **comment),
        notification(org, post, "COMMENT_DELETE"),
        notification(org, post, "SHARE"),
        notification(org, post, "COMMENT_EDIT"),
        notification(org, post, "SHARE_MENTION"),
    )
    answer = acme.deliver(connector, body, linkedin_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    expected = {"likes": 2, "comments": 1, "shares": 1}
    assert acme.totals(influencer, METRICS) == expected

    # Redelivered hours later with the header's own prefix: still counted once.
    signed = {
        "X-LI-Signature": "hmacsha256="
        + linkedin_signed(connector.secret(), body)["X-LI-Signature"]
    }
    assert acme.deliver(connector, body, signed).status_code == 200
    assert acme.totals(influencer, METRICS) == expected

    # One notification on its own (not batched), and a lead action (not engagement).
    single = encode(notification(org, post, "LIKE"))
    assert (
        acme.deliver(connector, single, linkedin_signed(connector.secret(), single)).status_code
        == 200
    )
    lead = encode({"type": "LEAD_ACTION", "leadGenFormResponse": "urn:li:leadGenFormResponse:1"})
    assert (
        acme.deliver(connector, lead, linkedin_signed(connector.secret(), lead)).status_code == 200
    )
    assert acme.totals(influencer, METRICS) == {"likes": 3, "comments": 1, "shares": 1}
    assert acme.dead_letters(connector) == []


def test_linkedin_refuses_wrong_missing_and_unprefixed_signatures(acme: Webhooks) -> None:
    org, post = organization()
    influencer = acme.influencer("linkedin", org)
    connector = acme.connector("linkedin")
    body = batch(notification(org, post, "LIKE"))
    before = acme.telemetry("refused", "linkedin")

    wrong = acme.deliver(connector, body, linkedin_signed("another-client-secret", body))
    assert acme.refused(wrong, 403) == "X-LI-Signature does not match"
    unprefixed = hmac.new(connector.secret().encode(), body, hashlib.sha256).hexdigest()
    bare = acme.deliver(connector, body, {"X-LI-Signature": unprefixed})
    assert acme.refused(bare, 403) == "X-LI-Signature does not match"
    missing = acme.deliver(connector, body, {})
    assert acme.refused(missing, 401) == "missing header X-LI-Signature"

    assert acme.totals(influencer, METRICS) == {"likes": 0, "comments": 0, "shares": 0}
    assert grown(before, acme.telemetry("refused", "linkedin")) == {"mismatch": 2, "missing": 1}
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (0, 3, 0)


def test_linkedin_unknown_actions_and_organizations_are_dead_letters(acme: Webhooks) -> None:
    org, post = organization()
    known = acme.influencer("linkedin", org)
    connector = acme.connector("linkedin")
    strange = notification(org, post, "REPOST_REACTION")
    mixed = batch(notification(org, post, "SHARE"), strange)
    assert (
        acme.deliver(connector, mixed, linkedin_signed(connector.secret(), mixed)).status_code
        == 200
    )
    odd = encode({"type": "ORGANIZATION_FOLLOWER_NOTIFICATIONS", "notifications": []})
    assert acme.deliver(connector, odd, linkedin_signed(connector.secret(), odd)).status_code == 200
    other, other_post = organization()
    likes = [notification(other, other_post, "LIKE") for _ in range(2)]
    body = batch(*likes)
    assert (
        acme.deliver(connector, body, linkedin_signed(connector.secret(), body)).status_code == 200
    )
    assert acme.totals(known, METRICS) == {"likes": 0, "comments": 0, "shares": 1}

    first, second, third = acme.dead_letters(connector)
    assert first["reasons"] == [
        reason("unknown LinkedIn social action 'REPOST_REACTION'", encode(strange).decode())
    ]
    assert second["reasons"] == [
        reason(
            "unknown LinkedIn notification type 'ORGANIZATION_FOLLOWER_NOTIFICATIONS'", odd.decode()
        )
    ]
    assert third["reasons"] == [f"event li:like:{n['notificationId']}: {UNRESOLVED}" for n in likes]

    influencer = acme.influencer("linkedin", other)
    for replays, counts in ((1, (2, 0)), (2, (0, 2))):
        replay = acme.replayed(third["id"])
        assert (replay["accepted"], replay["duplicates"]) == counts
        assert (replay["dead_letter"]["state"], replay["dead_letter"]["replays"]) == (
            "resolved",
            replays,
        )
        assert acme.totals(influencer, METRICS) == {"likes": 2, "comments": 0, "shares": 0}
    still = acme.replayed(first["id"])
    assert (still["accepted"], still["duplicates"]) == (0, 1)
    assert still["dead_letter"]["state"] == "open"
    assert acme.totals(known, METRICS) == {"likes": 0, "comments": 0, "shares": 1}
    open_ids = [d["id"] for d in acme.dead_letters(connector, state="open")]
    assert open_ids == [first["id"], second["id"]]
