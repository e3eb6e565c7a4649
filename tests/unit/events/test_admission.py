"""What a writer may write: the connectors' id namespace, a key's limits and the
tenant's bounds on values, checked over a batch (``events.admission``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pickle
from pathlib import Path

from hypemeter.auth.model import KeyLimits
from hypemeter.connectors.webhooks import ADAPTERS
from hypemeter.errors import Rejection
from hypemeter.events.admission import Admission, admit, faults
from hypemeter.events.model import (
    CONNECTOR_ID_PREFIXES,
    DEFAULT_VALUE_LIMITS,
    EventIn,
    ValueLimit,
    default_value_limit,
    is_connector_event_id,
)

BOUNDS = dict(DEFAULT_VALUE_LIMITS)
SDK = Admission.of(BOUNDS)
CONNECTOR = Admission.of(BOUNDS, connector_ids=True)
IMPORT = Admission.of(None, connector_ids=True)
FIXTURES = Path(__file__).parents[1] / "connectors" / "fixtures"
NOW_US = 1_795_183_200_000_000


def ev(**fields: object) -> EventIn:
    """A validated event: platform and metric normalised, influencer set."""
    base: dict[str, object] = {
        "event_id": "evt-1",
        "influencer_id": "inf-1",
        "platform": "app",
        "metric": "clicks",
        "value": 1.0,
    }
    return EventIn(**{**base, **fields})  # type: ignore[arg-type]


def test_the_issues_conversions_of_1e15_are_rejected_by_default() -> None:
    events = [ev(metric="conversions", value=1e15), ev(metric="conversions", value=3.0)]
    assert faults(events, SDK) == {
        0: (
            "value",
            "value 1e+15 is above the limit of 1e+06 per increment of conversions; an admin "
            "may change it (PUT /v1/admin/value-limits)",
        )
    }


def test_readings_have_their_own_larger_bound() -> None:
    reading = ev(metric="views", kind="snapshot", value=8e9)
    assert faults([reading], SDK) == {}
    assert faults([ev(metric="views", value=8e9)], SDK) == {
        0: (
            "value",
            "value 8e+09 is above the limit of 1e+09 per increment of views; an admin may "
            "change it (PUT /v1/admin/value-limits)",
        )
    }
    assert 0 in faults([ev(metric="likes", kind="snapshot", value=2e10)], SDK)


def test_a_negative_increment_is_bounded_by_its_size() -> None:
    assert 0 in faults([ev(metric="likes", value=-2e6)], SDK)
    assert faults([ev(metric="likes", value=-1e6)], SDK) == {}


def test_a_metric_without_its_own_bound_gets_the_custom_default() -> None:
    assert default_value_limit("story_replies") == ValueLimit(1e9, 1e12)
    assert 0 in faults([ev(metric="story_replies", value=2e9)], SDK)
    tenant = Admission.of({**BOUNDS, "likes": ValueLimit(10, 100)})
    assert 0 in faults([ev(metric="likes", value=11)], tenant)
    assert faults([ev(metric="likes", kind="snapshot", value=100)], tenant) == {}


def test_ids_in_the_connectors_namespace_are_refused_from_keys_only() -> None:
    events = [
        ev(event_id="ig:comment:17865799348089039"),
        ev(event_id="my-ig:comment:1"),
        ev(event_id=None),
        ev(event_id="poll:youtube:v1:views:1"),
        ev(event_id="note\nx:like:1"),  # a line break must not fool the bulk search
    ]
    found = faults(events, SDK)
    assert sorted(found) == [0, 3]
    assert found[0][0] == "event_id"
    assert found[0][1].startswith(
        "event_id 'ig:comment:17865799348089039' is in the namespace of platform connectors"
    )
    assert faults(events, CONNECTOR) == {}
    assert faults(events, IMPORT) == {}


def test_a_keys_limits_name_the_field_of_each_event_outside_them() -> None:
    limits = KeyLimits(
        platforms=frozenset({"app"}),
        metrics=frozenset({"clicks"}),
        influencers=frozenset({"inf-1"}),
        campaigns=frozenset({"summer"}),
        max_value=5.0,
    )
    policy = Admission.of(BOUNDS, key=limits)
    events = [
        ev(campaign_id="summer"),
        ev(campaign_id="summer", platform="web"),
        ev(campaign_id="summer", metric="likes"),
        ev(campaign_id="summer", influencer_id="inf-2"),
        ev(campaign_id="winter"),
        ev(),
        ev(campaign_id="summer", value=6.0),
        ev(campaign_id="summer", event_id="tw:poll:1", platform="web"),
    ]
    assert faults(events, policy) == {
        1: ("platform", "platform 'web' is outside this key's limits.platforms"),
        2: ("metric", "metric 'likes' is outside this key's limits.metrics"),
        3: ("influencer_id", "influencer_id 'inf-2' is outside this key's limits.influencers"),
        4: ("campaign_id", "campaign_id 'winter' is outside this key's limits.campaigns"),
        5: (
            "campaign_id",
            "campaign_id is required: this key may write only events of its campaigns "
            "(limits.campaigns)",
        ),
        6: ("value", "value 6 is above this key's limits.max_value (5)"),
        7: faults([events[7]], SDK)[0],  # the first fault of an event is the one reported
    }


def test_admit_keeps_the_rest_and_reports_by_index() -> None:
    events = [ev(event_id="a"), ev(event_id="ig:1"), ev(event_id="b", value=1e7)]
    rejected: list[Rejection] = []
    kept, stamps = admit(events, [10, 11, 12], [3, 5, 9], SDK, rejected)
    assert [e.event_id for e in kept] == ["a"]
    assert stamps == [10]
    assert sorted((r.index, r.field) for r in rejected) == [(5, "event_id"), (9, "value")]
    same = [ev(event_id="c")]
    assert admit(same, [1], [0], SDK, rejected) == (same, [1])


def test_an_import_is_not_bounded_and_the_policy_travels_to_workers() -> None:
    assert faults([ev(metric="conversions", value=1e15)], IMPORT) == {}
    limited = Admission.of(BOUNDS, key=KeyLimits(influencers=frozenset({"inf-1"})))
    assert pickle.loads(pickle.dumps(limited)) == limited
    assert limited.floor == 1e6


def test_every_id_a_webhook_mapper_gives_is_in_the_connectors_namespace() -> None:
    mapped = [
        *_mapped("instagram", _meta_comments()),
        *_mapped("twitch", _twitch_poll()),
        *_mapped("x", _x_like()),
        *_mapped("linkedin", _linkedin_like()),
    ]
    assert len(mapped) >= 4
    assert all(is_connector_event_id(event_id) for event_id in mapped), mapped
    assert {event_id.split(":")[0] + ":" for event_id in mapped} <= set(CONNECTOR_ID_PREFIXES)


def _mapped(platform: str, delivery: tuple[dict[str, str], bytes, dict[str, str]]) -> list[str]:
    headers, body, secrets = delivery
    receipt = ADAPTERS[platform].receive(headers, body, secrets, now_us=NOW_US)
    return [event.event_id for event in receipt.events]


def _hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _meta_comments() -> tuple[dict[str, str], bytes, dict[str, str]]:
    body = (FIXTURES / "meta_instagram_comments_webhook.json").read_bytes()
    signature = {"x-hub-signature-256": "sha256=" + _hex("s", body)}
    return signature, body, {"app_secret": "s", "verify_token": "v"}


def _twitch_poll() -> tuple[dict[str, str], bytes, dict[str, str]]:
    body = (FIXTURES / "twitch_eventsub_poll_progress.json").read_bytes()
    message_id, sent = "befa7b53-d79d-478f-86b9-120f112b044e", "2026-11-20T13:59:30.123456789Z"
    headers = {
        "twitch-eventsub-message-id": message_id,
        "twitch-eventsub-message-timestamp": sent,
        "twitch-eventsub-message-signature": "sha256="
        + _hex("s", (message_id + sent).encode() + body),
        "twitch-eventsub-message-type": "notification",
    }
    return headers, body, {"eventsub_secret": "s"}


def _x_like() -> tuple[dict[str, str], bytes, dict[str, str]]:
    owner = {"id_str": "2244994945", "screen_name": "owner"}
    post = {"id_str": "146", "text": "t", "timestamp_ms": "1795183100000", "user": owner}
    favorite = {
        "id": "a7ba59eab0bfcba386f7acedac279542",
        "timestamp_ms": 1795183000000,
        "favorited_status": post,
        "user": {"id_str": "987654321", "screen_name": "fan"},
    }
    body = json.dumps({"for_user_id": "2244994945", "favorite_events": [favorite]}).encode()
    digest = hmac.new(b"s", body, hashlib.sha256).digest()
    headers = {"x-twitter-webhooks-signature": "sha256=" + base64.b64encode(digest).decode()}
    return headers, body, {"consumer_secret": "s"}


def _linkedin_like() -> tuple[dict[str, str], bytes, dict[str, str]]:
    notification = {
        "notificationId": 1,
        "action": "LIKE",
        "organizationalEntity": "urn:li:organization:96072893",
        "sourcePost": "urn:li:activity:7094637247890620418",
        "lastModifiedAt": 1795183100001,
        "subscriber": "urn:li:person:zLqTygBP8S",
    }
    payload = {"type": "ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS", "notifications": [notification]}
    body = json.dumps(payload).encode()
    return {"x-li-signature": _hex("s", b"hmacsha256=" + body)}, body, {"client_secret": "s"}
