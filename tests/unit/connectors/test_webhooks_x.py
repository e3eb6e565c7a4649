"""X Account Activity: CRC answer, base64 signature and engagement on the user's posts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from hypemeter.connectors.webhooks import ADAPTERS, MappedEvent, NewContent, WebhookRefused

SECRETS = {"consumer_secret": "test-consumer-secret"}
NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
X = ADAPTERS["x"]
OWNER = "2244994945"
FAN = "987654321"
POST = "1460323737035677698"


def b64_hmac(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def signed(body: bytes, secret: str = SECRETS["consumer_secret"]) -> dict[str, str]:
    return {"x-twitter-webhooks-signature": "sha256=" + b64_hmac(secret, body)}


def user(user_id: str, handle: str) -> dict[str, object]:
    return {"id": int(user_id), "id_str": user_id, "screen_name": handle}


def tweet(tweet_id: str, author: str, **extra: object) -> dict[str, object]:
    handle = "owner" if author == OWNER else "fan"
    return {
        "id_str": tweet_id,
        "text": f"tweet {tweet_id}",
        "timestamp_ms": "1795183100000",
        "user": user(author, handle),
        **extra,
    }


def body_of(**keys: object) -> bytes:
    return json.dumps({"for_user_id": OWNER, **keys}).encode()


def test_crc_answers_the_signed_response_token_as_json() -> None:
    reply = X.answer_get({"crc_token": "challenge-123"}, SECRETS, now_us=NOW_US)
    assert (reply.status, reply.media_type) == (200, "application/json")
    expected = "sha256=" + b64_hmac("test-consumer-secret", b"challenge-123")
    assert json.loads(reply.body) == {"response_token": expected}
    assert X.answer_get({}, SECRETS, now_us=NOW_US).status == 400


def test_a_like_of_the_users_post_is_a_likes_delta() -> None:
    favorite = {
        "id": "a7ba59eab0bfcba386f7acedac279542",
        "created_at": "Mon Mar 26 16:33:26 +0000 2018",
        "timestamp_ms": 1795183000000,
        "favorited_status": tweet(POST, OWNER),
        "user": user(FAN, "fan"),
    }
    body = body_of(favorite_events=[favorite])
    receipt = X.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 200
    assert receipt.events == (
        MappedEvent(
            event_id="x:like:a7ba59eab0bfcba386f7acedac279542",
            metric="likes",
            value=1.0,
            kind="delta",
            ts_us=1_795_183_000_000_000,
            account_id=OWNER,
            content_id=POST,
            user_id=FAN,
        ),
    )


def test_replies_retweets_and_quotes_of_the_users_post_are_counted() -> None:
    body = body_of(
        tweet_create_events=[
            tweet("11", FAN, in_reply_to_status_id_str=POST, in_reply_to_user_id_str=OWNER),
            tweet("12", FAN, retweeted_status=tweet(POST, OWNER)),
            tweet("13", FAN, is_quote_status=True, quoted_status=tweet(POST, OWNER)),
        ]
    )
    receipt = X.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [(e.event_id, e.metric, e.content_id, e.user_id, e.text) for e in receipt.events] == [
        ("x:reply:11", "comments", POST, FAN, "tweet 11"),
        ("x:retweet:12", "shares", POST, FAN, None),
        ("x:quote:13", "shares", POST, FAN, "tweet 13"),
    ]
    assert {(e.value, e.kind, e.account_id, e.ts_us) for e in receipt.events} == {
        (1.0, "delta", OWNER, 1_795_183_100_000_000)
    }
    again = X.receive(signed(body), body, SECRETS, now_us=NOW_US + 5)
    assert again.events == receipt.events


def test_a_new_post_by_the_user_is_new_content_and_mentions_record_nothing() -> None:
    body = body_of(
        tweet_create_events=[
            tweet("21", OWNER),
            tweet("22", FAN, entities={"user_mentions": [{"id_str": OWNER}]}),
            tweet("23", OWNER, retweeted_status=tweet("9", FAN)),
            tweet("24", OWNER, in_reply_to_status_id_str="9", in_reply_to_user_id_str=FAN),
        ]
    )
    receipt = X.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.events == () and receipt.unmapped == ()
    assert receipt.content == (
        NewContent(
            content_id="21",
            account_id=OWNER,
            url="https://x.com/owner/status/21",
            published_us=1_795_183_100_000_000,
            type="post",
        ),
    )


def test_revocation_disables_and_known_events_record_nothing() -> None:
    revoke = {"revoke": {"date_time": "2018-05-24T09:48:12+00:00", "source": {"user_id": OWNER}}}
    body = json.dumps({"user_event": revoke}).encode()
    receipt = X.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.disable == f"X user {OWNER} revoked the app's authorization (user_event.revoke)"
    follows = body_of(follow_events=[{"type": "follow"}], direct_message_events=[{"id": "1"}])
    quiet = X.receive(signed(follows), follows, SECRETS, now_us=NOW_US)
    assert (quiet.events, quiet.unmapped, quiet.disable) == ((), (), None)


def test_an_unknown_key_goes_to_dead_letters() -> None:
    body = body_of(space_events=[{"id": "s1"}])
    receipt = X.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [u.reason for u in receipt.unmapped] == ["unknown Account Activity key 'space_events'"]
    assert json.loads(receipt.unmapped[0].payload) == {"space_events": [{"id": "s1"}]}


def test_wrong_and_missing_signatures_are_refused() -> None:
    body = body_of(favorite_events=[])
    with pytest.raises(WebhookRefused) as wrong:
        X.receive(signed(body, "other"), body, SECRETS, now_us=NOW_US)
    assert (wrong.value.status, wrong.value.reason) == (
        403,
        "X-Twitter-Webhooks-Signature does not match",
    )
    hex_digest = hmac.new(b"test-consumer-secret", body, hashlib.sha256).hexdigest()
    with pytest.raises(WebhookRefused):
        X.receive(
            {"x-twitter-webhooks-signature": f"sha256={hex_digest}"}, body, SECRETS, now_us=NOW_US
        )
    with pytest.raises(WebhookRefused) as missing:
        X.receive({}, body, SECRETS, now_us=NOW_US)
    assert (missing.value.status, missing.value.reason) == (
        401,
        "missing header X-Twitter-Webhooks-Signature",
    )
