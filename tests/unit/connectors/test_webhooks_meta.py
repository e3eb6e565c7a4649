"""Meta (Instagram, Facebook) webhooks: handshake, X-Hub-Signature-256 and field mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from hypemeter.connectors.webhooks import ADAPTERS, MappedEvent, WebhookMalformed, WebhookRefused
from hypemeter.events.model import BUILTIN_METRICS

FIXTURES = Path(__file__).parent / "fixtures"
COMMENTS = (FIXTURES / "meta_instagram_comments_webhook.json").read_bytes()
STORY = (FIXTURES / "meta_instagram_story_insights_webhook.json").read_bytes()
SECRETS = {"app_secret": "test-app-secret", "verify_token": "test-verify-token"}
NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
SENT_US = 1_763_800_000_000_000  # entry.time of the fixtures
INSTAGRAM = ADAPTERS["instagram"]
FACEBOOK = ADAPTERS["facebook"]


def signed(body: bytes, secret: str = SECRETS["app_secret"]) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}"}


def delivery(*changes: dict[str, object], obj: str = "instagram") -> bytes:
    entry = {"id": "17841400000000001", "time": 1763800000, "changes": list(changes)}
    return json.dumps({"object": obj, "entry": [entry]}).encode()


def test_handshake_answers_the_challenge_only_for_the_configured_token() -> None:
    query = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
    good = INSTAGRAM.answer_get(
        {**query, "hub.verify_token": "test-verify-token"}, SECRETS, now_us=NOW_US
    )
    assert (good.status, good.body, good.media_type) == (200, b"1158201444", "text/plain")
    wrong = INSTAGRAM.answer_get({**query, "hub.verify_token": "nope"}, SECRETS, now_us=NOW_US)
    assert wrong.status == 403
    other_mode = {**query, "hub.mode": "unsubscribe", "hub.verify_token": "test-verify-token"}
    assert INSTAGRAM.answer_get(other_mode, SECRETS, now_us=NOW_US).status == 403
    unconfigured = {"app_secret": "x"}
    empty = {**query, "hub.verify_token": ""}
    assert INSTAGRAM.answer_get(empty, unconfigured, now_us=NOW_US).status == 403


def test_a_signed_comment_becomes_one_comments_delta() -> None:
    receipt = INSTAGRAM.receive(signed(COMMENTS), COMMENTS, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 200
    assert receipt.events == (
        MappedEvent(
            event_id="ig:comment:17865799348089039",
            metric="comments",
            value=1.0,
            kind="delta",
            ts_us=SENT_US,
            account_id="17841400000000001",
            content_id="18023345989012345",
            user_id="232323232",
            text="This is so good!",
            properties={"field": "comments"},
        ),
    )
    assert receipt.unmapped == () and receipt.content == ()
    assert receipt.disable is None and receipt.ignored is None


def test_the_same_delivery_mapped_twice_gives_the_same_event_ids() -> None:
    first = INSTAGRAM.receive(signed(COMMENTS), COMMENTS, SECRETS, now_us=NOW_US)
    again = INSTAGRAM.receive(signed(COMMENTS), COMMENTS, SECRETS, now_us=NOW_US + 3600)
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
    stories = [INSTAGRAM.receive(signed(STORY), STORY, SECRETS, now_us=NOW_US) for _ in "ab"]
    assert [e.event_id for e in stories[0].events] == [e.event_id for e in stories[1].events]


def test_wrong_and_missing_signatures_are_refused() -> None:
    with pytest.raises(WebhookRefused) as wrong:
        INSTAGRAM.receive(signed(COMMENTS, "other-secret"), COMMENTS, SECRETS, now_us=NOW_US)
    assert (wrong.value.status, wrong.value.reason) == (403, "X-Hub-Signature-256 does not match")
    with pytest.raises(WebhookRefused) as tampered:
        INSTAGRAM.receive(signed(COMMENTS), COMMENTS + b" ", SECRETS, now_us=NOW_US)
    assert tampered.value.status == 403
    with pytest.raises(WebhookRefused) as missing:
        INSTAGRAM.receive({}, COMMENTS, SECRETS, now_us=NOW_US)
    assert (missing.value.status, missing.value.reason) == (
        401,
        "missing header X-Hub-Signature-256",
    )
    with pytest.raises(WebhookRefused) as unconfigured:
        INSTAGRAM.receive(signed(COMMENTS), COMMENTS, {}, now_us=NOW_US)
    assert unconfigured.value.status == 403


def test_story_insights_are_snapshots_and_minus_one_is_skipped() -> None:
    receipt = INSTAGRAM.receive(signed(STORY), STORY, SECRETS, now_us=NOW_US)
    readings = {e.metric: e.value for e in receipt.events}
    # replies is -1 (fewer than 5): unknown, so there is no comments reading at all.
    assert readings == {"impressions": 444.0, "reach": 44.0}
    assert {e.event_id for e in receipt.events} == {
        "ig:story_insights:17887498072083520:impressions",
        "ig:story_insights:17887498072083520:reach",
    }
    for event in receipt.events:
        assert event.kind == "snapshot"
        assert event.content_id == "17887498072083520"
        assert event.account_id == "17841400000000001"
        assert event.ts_us == SENT_US
        assert event.properties == {
            "field": "story_insights",
            "taps_forward": 4,
            "taps_back": 3,
            "exits": 3,
        }
    assert receipt.unmapped == ()


def test_story_replies_become_a_comments_reading_when_known() -> None:
    value = {"media_id": "1", "replies": 7, "reach": -1, "exits": -1}
    body = delivery({"field": "story_insights", "value": value})
    receipt = INSTAGRAM.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [(e.metric, e.value) for e in receipt.events] == [("comments", 7.0)]
    assert receipt.events[0].properties == {"field": "story_insights"}


def test_unknown_fields_and_comments_without_ids_go_to_dead_letters() -> None:
    body = delivery(
        {"field": "shopping_orders", "value": {"order": 1}},
        {"field": "comments", "value": {"text": "no id", "media": {"id": "5"}}},
    )
    receipt = INSTAGRAM.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.events == ()
    reasons = [u.reason for u in receipt.unmapped]
    assert reasons == [
        "unknown Meta webhook field 'shopping_orders'",
        "comments change without a comment id",
    ]
    assert json.loads(receipt.unmapped[0].payload) == {
        "field": "shopping_orders",
        "value": {"order": 1},
    }


def test_live_comments_accept_comment_id_and_mentions_record_nothing() -> None:
    live = {"comment_id": "99", "from": {"id": "7"}, "text": "hi", "media": {"id": "m1"}}
    body = delivery(
        {"field": "live_comments", "value": live},
        {"field": "mentions", "value": {"media_id": "m2", "comment_id": "c2"}},
    )
    receipt = INSTAGRAM.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [(e.event_id, e.content_id, e.user_id) for e in receipt.events] == [
        ("ig:comment:99", "m1", "7")
    ]
    assert receipt.events[0].properties == {"field": "live_comments"}
    assert receipt.unmapped == ()


def test_facebook_feed_comments_and_reactions_use_the_fb_prefix() -> None:
    common = {"post_id": "p_1", "from": {"id": "u1"}, "created_time": 1763800100}
    body = delivery(
        {
            "field": "feed",
            "value": {
                **common,
                "item": "comment",
                "verb": "add",
                "comment_id": "c1",
                "message": "nice",
            },
        },
        {
            "field": "feed",
            "value": {**common, "item": "comment", "verb": "remove", "comment_id": "c1"},
        },
        {
            "field": "feed",
            "value": {**common, "item": "reaction", "verb": "add", "reaction_type": "love"},
        },
        {"field": "feed", "value": {**common, "item": "status", "verb": "add"}},
        obj="page",
    )
    receipt = FACEBOOK.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [(e.event_id, e.metric, e.value, e.text) for e in receipt.events] == [
        ("fb:comment:c1", "comments", 1.0, "nice"),
        ("fb:comment:c1:remove", "comments", -1.0, None),
        ("fb:reaction:p_1:u1:1763800100", "likes", 1.0, None),
    ]
    assert {e.ts_us for e in receipt.events} == {1_763_800_100_000_000}
    assert receipt.events[2].properties == {"field": "feed", "reaction": "love"}
    assert receipt.unmapped == ()


def test_every_metric_is_built_in() -> None:
    for body in (COMMENTS, STORY):
        receipt = INSTAGRAM.receive(signed(body), body, SECRETS, now_us=NOW_US)
        assert {e.metric for e in receipt.events} <= set(BUILTIN_METRICS)


def test_a_verified_body_that_is_not_json_is_malformed() -> None:
    body = b"{not json"
    with pytest.raises(WebhookMalformed, match="not valid JSON"):
        INSTAGRAM.receive(signed(body), body, SECRETS, now_us=NOW_US)
