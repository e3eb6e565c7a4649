"""LinkedIn: challengeCode validation, X-LI-Signature and social action notifications."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from hypemeter.connectors.webhooks import ADAPTERS, MappedEvent, WebhookRefused

SECRETS = {"client_secret": "test-client-secret"}
NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
LINKEDIN = ADAPTERS["linkedin"]
ORG = "urn:li:organization:96072893"
POST = "urn:li:activity:7094637247890620418"
MEMBER = "urn:li:person:zLqTygBP8S"


def hex_hmac(message: bytes, secret: str = SECRETS["client_secret"]) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str = SECRETS["client_secret"]) -> dict[str, str]:
    return {"x-li-signature": hex_hmac(b"hmacsha256=" + body, secret)}


def notification(number: int, action: str, **extra: object) -> dict[str, object]:
    return {
        "notificationId": number,
        "action": action,
        "organizationalEntity": ORG,
        "sourcePost": POST,
        "lastModifiedAt": 1795183100000 + number,
        "subscriber": MEMBER,
        **extra,
    }


def batch(*notifications: dict[str, object]) -> bytes:
    payload = {"type": "ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS", "notifications": notifications}
    return json.dumps(payload).encode()


COMMENT = {
    "comment": {
        "owner": MEMBER,
        "text": "Great post",
        "entity": f"urn:li:comment:({POST},7094977717598625792)",
        "object": POST,
    }
}
BODY = batch(
    notification(1, "LIKE"),
    notification(2, "COMMENT", decoratedGeneratedActivity=COMMENT),
    notification(3, "SHARE"),
    notification(4, "COMMENT_DELETE"),
    notification(5, "COMMENT_EDIT", decoratedGeneratedActivity=COMMENT),
    notification(6, "ADMIN_COMMENT", decoratedGeneratedActivity=COMMENT),
)


def test_the_challenge_is_answered_with_its_hmac_as_json() -> None:
    code = "890e4665-4dfe-4ab1-b689-ed553bceeed0"
    reply = LINKEDIN.answer_get({"challengeCode": code}, SECRETS, now_us=NOW_US)
    assert (reply.status, reply.media_type) == (200, "application/json")
    assert json.loads(reply.body) == {
        "challengeCode": code,
        "challengeResponse": hex_hmac(code.encode()),
    }
    assert LINKEDIN.answer_get({}, SECRETS, now_us=NOW_US).status == 400


def test_social_actions_map_to_deltas_keyed_by_notification_id() -> None:
    receipt = LINKEDIN.receive(signed(BODY), BODY, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 200
    assert [(e.event_id, e.metric, e.value) for e in receipt.events] == [
        ("li:like:1", "likes", 1.0),
        ("li:comment:2", "comments", 1.0),
        ("li:share:3", "shares", 1.0),
        ("li:comment_delete:4", "comments", -1.0),
        ("li:admin_comment:6", "comments", 1.0),
    ]
    assert receipt.events[1] == MappedEvent(
        event_id="li:comment:2",
        metric="comments",
        value=1.0,
        kind="delta",
        ts_us=1_795_183_100_002_000,
        account_id=ORG,
        content_id=POST,
        user_id=MEMBER,
        text="Great post",
        properties={"action": "COMMENT"},
    )
    assert receipt.unmapped == ()


def test_the_same_batch_twice_gives_the_same_event_ids() -> None:
    first = LINKEDIN.receive(signed(BODY), BODY, SECRETS, now_us=NOW_US)
    again = LINKEDIN.receive(signed(BODY), BODY, SECRETS, now_us=NOW_US + 300_000_000)
    assert first.events == again.events


def test_a_header_with_the_hmacsha256_prefix_is_accepted() -> None:
    header = {"x-li-signature": "hmacsha256=" + signed(BODY)["x-li-signature"]}
    assert len(LINKEDIN.receive(header, BODY, SECRETS, now_us=NOW_US).events) == 5


def test_unknown_actions_and_types_go_to_dead_letters() -> None:
    body = batch(notification(7, "REPOST_REACTION"))
    receipt = LINKEDIN.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [u.reason for u in receipt.unmapped] == [
        "unknown LinkedIn social action 'REPOST_REACTION'"
    ]
    other = json.dumps({"type": "MEMBER_SOMETHING", "notifications": []}).encode()
    receipt = LINKEDIN.receive(signed(other), other, SECRETS, now_us=NOW_US)
    assert [u.reason for u in receipt.unmapped] == [
        "unknown LinkedIn notification type 'MEMBER_SOMETHING'"
    ]
    lead = json.dumps({"type": "LEAD_ACTION", "leadAction": "CREATED"}).encode()
    assert LINKEDIN.receive(signed(lead), lead, SECRETS, now_us=NOW_US).unmapped == ()


def test_wrong_and_missing_signatures_are_refused() -> None:
    with pytest.raises(WebhookRefused) as wrong:
        LINKEDIN.receive(signed(BODY, "other"), BODY, SECRETS, now_us=NOW_US)
    assert (wrong.value.status, wrong.value.reason) == (403, "X-LI-Signature does not match")
    # The bare body without the signed prefix is not LinkedIn's construction.
    with pytest.raises(WebhookRefused):
        LINKEDIN.receive({"x-li-signature": hex_hmac(BODY)}, BODY, SECRETS, now_us=NOW_US)
    with pytest.raises(WebhookRefused) as missing:
        LINKEDIN.receive({}, BODY, SECRETS, now_us=NOW_US)
    assert (missing.value.status, missing.value.reason) == (401, "missing header X-LI-Signature")
