"""Twitch EventSub over webhooks.

No GET handshake (405): the callback is verified by a signed POST instead.
Every POST carries ``Twitch-Eventsub-Message-Id``, ``-Timestamp`` (RFC 3339, ns),
``-Type`` and ``-Signature: sha256=<hex HMAC-SHA256(secret, id + timestamp + body)>``.
Following Twitch's replay guidance, a timestamp more than 10 minutes from now
is refused (403), and the message id names the delivery (``Receipt.message_id``):
the service drops a message id it has already processed.

The signature covers the id, the timestamp and the body, not the type header. Only
the three documented types are accepted, and the body must be of the kind the
type names (a challenge for a verification, an event for a notification, neither
and a subscription no longer enabled for a revocation); anything else is 400, so
a captured notification cannot be replayed as a revocation.

- ``webhook_callback_verification``: 200 with the ``challenge`` as plain text.
- ``revocation``: 204; ``Receipt.disable`` names the subscription and its status
  (``authorization_revoked``, ``user_removed``, ``notification_failures_exceeded``...).
- ``notification`` of ``channel.poll.begin`` / ``.progress`` / ``.end``: one
  ``votes`` snapshot per choice (the choice's running total), content =
  ``<poll id>:<choice id>`` (one reading series per choice), account =
  broadcaster. The id ``tw:poll:<poll>:<choice>:<message id>`` makes a redelivery
  of one message dedupe while each later progress message is a new reading.
  ``begin`` choices carry no counts yet: they read 0. The reading's time is the
  message timestamp. Other subscription types go to dead letters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from hypemeter.connectors.webhooks.model import (
    MappedEvent,
    Receipt,
    Reply,
    Secrets,
    Unmapped,
    WebhookMalformed,
    WebhookRefused,
)
from hypemeter.connectors.webhooks.payload import (
    Obj,
    decode_object,
    fragment,
    id_of,
    number_of,
    obj_of,
    objs_of,
    rfc3339_us,
    str_of,
)
from hypemeter.connectors.webhooks.verification import (
    check_fresh,
    check_signature,
    hmac_hex,
    require_header,
    require_secret,
)

ID_HEADER = "Twitch-Eventsub-Message-Id"
TIMESTAMP_HEADER = "Twitch-Eventsub-Message-Timestamp"
SIGNATURE_HEADER = "Twitch-Eventsub-Message-Signature"
TYPE_HEADER = "Twitch-Eventsub-Message-Type"
MAX_AGE_S = 600
POLL_TYPES = frozenset({"channel.poll.begin", "channel.poll.progress", "channel.poll.end"})
MESSAGE_TYPES = ("notification", "webhook_callback_verification", "revocation")


@dataclass(frozen=True, slots=True)
class _Message:
    """The signed facts of one EventSub message."""

    message_id: str
    ts_us: int
    kind: str


@dataclass(frozen=True, slots=True)
class TwitchAdapter:
    """The Twitch EventSub webhook adapter."""

    platform: str = "twitch"
    secret_names: tuple[str, ...] = ("eventsub_secret",)

    def answer_get(self, query: Mapping[str, str], secrets: Secrets, *, now_us: int) -> Reply:
        """EventSub verifies callbacks by POST; GET is not part of it."""
        return Reply(405, b"Twitch EventSub has no GET handshake")

    def receive(
        self, headers: Mapping[str, str], body: bytes, secrets: Secrets, *, now_us: int
    ) -> Receipt:
        """Verify the signature and timestamp, check the type against the body, then
        answer by message type."""
        message = _verify(headers, body, require_secret(secrets, "eventsub_secret"), now_us)
        payload = decode_object(body, what="the EventSub body")
        _check_kind(message.kind, payload)
        subscription = obj_of(payload, "subscription")
        replay_id = f"twitch:{message.message_id}"
        if message.kind == "webhook_callback_verification":
            challenge = str_of(payload, "challenge") or ""
            return Receipt(Reply(200, challenge.encode()), message_id=replay_id)
        if message.kind == "revocation":
            status = str_of(subscription, "status")
            reason = (
                f"Twitch revoked EventSub subscription {id_of(subscription, 'id')} "
                f"({str_of(subscription, 'type')}): status {status}"
            )
            return Receipt(Reply(204), disable=reason, message_id=replay_id)
        parts = _notification(payload, message)
        return Receipt.collect(Reply(204), parts, message_id=replay_id)


def _check_kind(kind: str, payload: Obj) -> None:
    """The type header is not signed: it must be a documented type, and name the kind
    of body that was signed."""
    if kind not in MESSAGE_TYPES:
        raise WebhookMalformed(
            f"{TYPE_HEADER} {kind!r} is not one of {', '.join(MESSAGE_TYPES)}",
            field=TYPE_HEADER,
        )
    has_challenge = str_of(payload, "challenge") is not None
    has_event = obj_of(payload, "event") is not None
    status = str_of(obj_of(payload, "subscription"), "status")
    fits = {
        "webhook_callback_verification": has_challenge and not has_event,
        "notification": has_event and not has_challenge,
        "revocation": not has_event and not has_challenge and status not in (None, "enabled"),
    }[kind]
    if not fits:
        raise WebhookMalformed(
            f"the signed body is not a {kind} message ({TYPE_HEADER} is not signed)",
            field=TYPE_HEADER,
        )


def _verify(headers: Mapping[str, str], body: bytes, secret: str, now_us: int) -> _Message:
    message_id = require_header(headers, ID_HEADER)
    timestamp = require_header(headers, TIMESTAMP_HEADER)
    given = require_header(headers, SIGNATURE_HEADER)
    expected = "sha256=" + hmac_hex(secret, (message_id + timestamp).encode() + body)
    check_signature(given, expected, header=SIGNATURE_HEADER)
    sent_us = rfc3339_us(timestamp)
    if sent_us is None:
        raise WebhookRefused(403, f"{TIMESTAMP_HEADER} is not an RFC 3339 time: {timestamp!r}")
    check_fresh(
        sent_us,
        now_us,
        limit_s=MAX_AGE_S,
        header=TIMESTAMP_HEADER,
        shown=timestamp,
        status=403,
    )
    return _Message(message_id, sent_us, require_header(headers, TYPE_HEADER))


def _notification(payload: Obj, message: _Message) -> Iterator[MappedEvent | Unmapped]:
    kind = str_of(obj_of(payload, "subscription"), "type")
    event = obj_of(payload, "event")
    if kind not in POLL_TYPES:
        yield Unmapped(f"unknown EventSub subscription type {kind!r}", fragment(payload))
        return
    poll_id = id_of(event, "id")
    if poll_id is None:
        yield Unmapped(f"{kind} without a poll id", fragment(payload))
        return
    phase = kind.rsplit(".", 1)[-1]
    for choice in objs_of(event, "choices"):
        yield _vote_reading(event, choice, poll_id, phase, message)


def _vote_reading(
    event: Obj | None, choice: Obj, poll_id: str, phase: str, message: _Message
) -> MappedEvent | Unmapped:
    choice_id = id_of(choice, "id")
    votes = number_of(choice, "votes")
    if votes is None and phase == "begin":
        votes = 0.0
    if choice_id is None or votes is None or votes < 0:
        return Unmapped(f"channel.poll.{phase} choice without an id or votes", fragment(choice))
    facts: dict[str, object] = {"poll_id": poll_id, "choice_id": choice_id, "phase": phase}
    for name, key in (("choice", "title"), ("poll", "title"), ("status", "status")):
        text = str_of(choice if name == "choice" else event, key)
        if text is not None:
            facts[name] = text
    return MappedEvent(
        event_id=f"tw:poll:{poll_id}:{choice_id}:{message.message_id}",
        metric="votes",
        value=votes,
        kind="snapshot",
        ts_us=message.ts_us,
        account_id=id_of(event, "broadcaster_user_id"),
        # One series per choice: each choice's running total is its own reading.
        content_id=f"{poll_id}:{choice_id}",
        properties=facts,
    )
