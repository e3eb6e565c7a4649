"""LinkedIn webhooks: organization social action notifications (Company Pages).

Handshake: ``GET ?challengeCode=<uuid>`` answers 200 JSON ``{"challengeCode",
"challengeResponse": hex HMAC-SHA256(client_secret, challengeCode)}`` within 3 s;
LinkedIn re-validates every 2 hours. (Parent-child apps also get an
``applicationId``; a connector has one client secret, which is used.)

Deliveries carry ``X-LI-Signature``. LinkedIn's webhook page says it is "the
HMACSHA256 hash of the JSON-encoded string representation of the POST body
prefixed by ``hmacsha256=``", computed with the client secret: the prefix is part
of the *signed string*, so the expected value is
``hex HMAC-SHA256(client_secret, b"hmacsha256=" + raw body)``. A header that
itself starts with ``hmacsha256=`` is accepted too (the prefix is dropped).

Body: ``{"type": "ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS", "notifications": [..]}``
(batches of up to 10, redelivered for hours: dedupe on ``notificationId``).
Each notification: ``notificationId``, ``action``, ``organizationalEntity``,
``sourcePost``, ``lastModifiedAt`` (ms), ``decoratedGeneratedActivity``. Mapping,
counting as LinkedIn's own counters do, id ``li:<action>:<notificationId>``:

- ``LIKE`` -> ``likes`` +1; ``COMMENT`` and ``ADMIN_COMMENT`` (the Page's own
  comment, which LinkedIn's comment count includes) -> ``comments`` +1;
  ``COMMENT_DELETE`` -> ``comments`` -1; ``SHARE`` -> ``shares`` +1.
- ``COMMENT_EDIT`` and ``SHARE_MENTION`` (the Page named in another post) carry
  no count: nothing. ``LEAD_ACTION`` deliveries are known and not engagement.
- Any other action or type goes to dead letters with a reason naming it.

LinkedIn only sends LIKE, COMMENT and SHARE for posts whose visibility is PUBLIC.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import msgspec

from hypemeter.connectors.webhooks.model import (
    MappedEvent,
    Receipt,
    Reply,
    Secrets,
    Unmapped,
)
from hypemeter.connectors.webhooks.payload import (
    US_PER_MS,
    Obj,
    decode_object,
    fragment,
    id_of,
    int_of,
    obj_of,
    objs_of,
    str_of,
)
from hypemeter.connectors.webhooks.verification import (
    check_signature,
    hmac_hex,
    require_header,
    require_secret,
)

SIGNATURE_HEADER = "X-LI-Signature"
SIGNED_PREFIX = "hmacsha256="
SOCIAL_ACTIONS = "ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS"
NOT_ENGAGEMENT_TYPES = frozenset({"LEAD_ACTION"})

ACTION_METRICS: Mapping[str, tuple[str, float]] = {
    "LIKE": ("likes", 1.0),
    "COMMENT": ("comments", 1.0),
    "ADMIN_COMMENT": ("comments", 1.0),
    "COMMENT_DELETE": ("comments", -1.0),
    "SHARE": ("shares", 1.0),
}
NOT_ENGAGEMENT_ACTIONS = frozenset({"COMMENT_EDIT", "SHARE_MENTION"})
TEXT_ACTIONS = frozenset({"COMMENT", "ADMIN_COMMENT", "SHARE"})


@dataclass(frozen=True, slots=True)
class LinkedInAdapter:
    """The LinkedIn webhook adapter."""

    platform: str = "linkedin"
    secret_names: tuple[str, ...] = ("client_secret",)

    def answer_get(self, query: Mapping[str, str], secrets: Secrets, *, now_us: int) -> Reply:
        """Answer the ``challengeCode`` validation with its HMAC."""
        code = query.get("challengeCode")
        secret = secrets.get("client_secret")
        if not code:
            return Reply(400, b"missing challengeCode")
        if not secret:
            return Reply(403, b"the connector has no client_secret configured")
        answer = {"challengeCode": code, "challengeResponse": hmac_hex(secret, code.encode())}
        return Reply(200, msgspec.json.encode(answer), "application/json")

    def receive(
        self, headers: Mapping[str, str], body: bytes, secrets: Secrets, *, now_us: int
    ) -> Receipt:
        """Verify ``X-LI-Signature`` over ``hmacsha256=`` + the raw body, then map."""
        secret = require_secret(secrets, "client_secret")
        given = require_header(headers, SIGNATURE_HEADER).strip().removeprefix(SIGNED_PREFIX)
        expected = hmac_hex(secret, SIGNED_PREFIX.encode() + body)
        check_signature(given, expected, header=SIGNATURE_HEADER)
        payload = decode_object(body, what="the LinkedIn webhook body")
        return Receipt.collect(Reply(200), _parts(payload, now_us))


def _parts(payload: Obj, now_us: int) -> Iterator[MappedEvent | Unmapped]:
    kind = str_of(payload, "type")
    if "notifications" not in payload and "notificationId" in payload:
        notifications = [payload]  # one notification, not batched
    elif kind == SOCIAL_ACTIONS:
        notifications = objs_of(payload, "notifications")
    else:
        if kind not in NOT_ENGAGEMENT_TYPES:
            yield Unmapped(f"unknown LinkedIn notification type {kind!r}", fragment(payload))
        return
    for notification in notifications:
        part = _notification(notification, now_us)
        if part is not None:
            yield part


def _notification(notification: Obj, now_us: int) -> MappedEvent | Unmapped | None:
    action = str_of(notification, "action") or ""
    notification_id = id_of(notification, "notificationId")
    post = id_of(notification, "sourcePost")
    if action in NOT_ENGAGEMENT_ACTIONS:
        return None
    if action not in ACTION_METRICS:
        return Unmapped(f"unknown LinkedIn social action {action!r}", fragment(notification))
    if notification_id is None or post is None:
        reason = f"LinkedIn {action} without a notificationId or sourcePost"
        return Unmapped(reason, fragment(notification))
    metric, value = ACTION_METRICS[action]
    modified_ms = int_of(notification, "lastModifiedAt")
    activity = _activity(notification)
    return MappedEvent(
        event_id=f"li:{action.lower()}:{notification_id}",
        metric=metric,
        value=value,
        kind="delta",
        ts_us=now_us if modified_ms is None else modified_ms * US_PER_MS,
        account_id=id_of(notification, "organizationalEntity"),
        content_id=post,
        user_id=id_of(activity, "owner") or id_of(activity, "actor"),
        text=_text(activity) if action in TEXT_ACTIONS else None,
        properties={"action": action},
    )


def _activity(notification: Obj) -> Obj | None:
    """The comment or share the action generated, as LinkedIn decorates it."""
    decorated = obj_of(notification, "decoratedGeneratedActivity")
    return obj_of(decorated, "comment") or obj_of(decorated, "share")


def _text(activity: Obj | None) -> str | None:
    return str_of(activity, "text") or str_of(obj_of(activity, "message"), "text")
