"""TikTok for Developers webhooks (Login Kit, Content Posting, Data Portability).

No GET handshake: the callback URL is set in the developer portal (GET is 405).
Deliveries are signed ``TikTok-Signature: t=<unix s>,s=<hex>`` with
``s = hex HMAC-SHA256(client_secret, "<t>.<raw body>")``; a ``t`` more than 300 s
from now is refused (401) as a possible replay. TikTok's body carries no delivery
id, so the signed pair (``t``, ``s``) names the delivery (``Receipt.message_id``):
the same pair again within the window is the same request replayed, and the
service drops it.

Body: ``{client_key, event, create_time, user_openid, content}``, ``content`` being
a JSON *string*. TikTok sends no engagement webhooks (counts are polled), so:

- ``authorization.removed``: the user revoked our access; ``Receipt.disable``
  carries the documented reason code.
- ``post.publish.publicly_available`` (Content Posting API): ``NewContent`` with
  ``content_id = post_id``, the video id the Display API and polling use.
- ``video.publish.completed`` (Video Kit): TikTok documents its content as
  ``{"share_id": ...}`` (Content Posting senders put ``publish_id`` there): a
  publish handle, not a video id. It becomes ``NewContent`` only if it carries
  ``post_id`` or ``video_id``; otherwise the receipt is ``ignored`` saying so,
  since the video id arrives later with ``post.publish.publicly_available``.
- Other documented events (upload failed, publish complete/failed, inbox
  delivered, no longer public, portability download ready) are known and carry
  no engagement: 200 with nothing. Any other event goes to dead letters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from hypemeter.connectors.webhooks.model import (
    NewContent,
    Receipt,
    Reply,
    Secrets,
    Unmapped,
    WebhookMalformed,
    WebhookRefused,
)
from hypemeter.connectors.webhooks.payload import (
    US_PER_S,
    Obj,
    as_obj,
    decode_object,
    id_of,
    int_of,
    str_of,
)
from hypemeter.connectors.webhooks.verification import (
    check_fresh,
    check_signature,
    hmac_hex,
    require_header,
    require_secret,
)

SIGNATURE_HEADER = "TikTok-Signature"
MAX_SKEW_S = 300

REMOVAL_REASONS: Mapping[int, str] = {
    0: "unknown",
    1: "user disconnected the app",
    2: "user account deleted",
    3: "user age changed",
    4: "user account banned",
    5: "developer revoked authorization",
}
PUBLISHED_EVENTS = frozenset({"video.publish.completed", "post.publish.publicly_available"})
NOT_ENGAGEMENT_EVENTS = frozenset(
    {
        "video.upload.failed",
        "portability.download.ready",
        "post.publish.complete",
        "post.publish.failed",
        "post.publish.inbox_delivered",
        "post.publish.no_longer_publicaly_available",  # sic, TikTok's spelling
        "post.publish.no_longer_publicly_available",
    }
)


@dataclass(frozen=True, slots=True)
class TikTokAdapter:
    """The TikTok webhook adapter."""

    platform: str = "tiktok"
    secret_names: tuple[str, ...] = ("client_secret",)

    def answer_get(self, query: Mapping[str, str], secrets: Secrets, *, now_us: int) -> Reply:
        """TikTok has no GET handshake."""
        return Reply(405, b"TikTok webhooks have no GET handshake")

    def receive(
        self, headers: Mapping[str, str], body: bytes, secrets: Secrets, *, now_us: int
    ) -> Receipt:
        """Verify ``TikTok-Signature`` and its timestamp, then map the one event."""
        secret = require_secret(secrets, "client_secret")
        sent_s, given = _signature_parts(require_header(headers, SIGNATURE_HEADER))
        expected = hmac_hex(secret, f"{sent_s}.".encode() + body)
        check_signature(given, expected, header=SIGNATURE_HEADER)
        check_fresh(
            sent_s * US_PER_S,
            now_us,
            limit_s=MAX_SKEW_S,
            header=SIGNATURE_HEADER,
            shown=f"t={sent_s}",
            status=401,
        )
        receipt = _map(decode_object(body, what="the TikTok webhook body"), body)
        return dataclasses.replace(receipt, message_id=f"tiktok:{sent_s}:{given.lower()}")


def _signature_parts(header: str) -> tuple[int, str]:
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    sent, signature = fields.get("t", ""), fields.get("s", "")
    if not sent.isdigit() or not signature:
        raise WebhookRefused(401, f"{SIGNATURE_HEADER} lacks t=<unix seconds> or s=<signature>")
    return int(sent), signature


def _map(payload: Obj, body: bytes) -> Receipt:
    event = str_of(payload, "event") or ""
    account_id = str_of(payload, "user_openid")
    content = _content(payload)
    if event == "authorization.removed":
        code = int_of(content, "reason")
        meaning = REMOVAL_REASONS.get(code, "unknown") if code is not None else "unknown"
        reason = f"TikTok authorization.removed for {account_id}: reason {code} ({meaning})"
        return Receipt(Reply(200), disable=reason)
    if event in PUBLISHED_EVENTS:
        return _published(event, payload, content, account_id)
    if event in NOT_ENGAGEMENT_EVENTS:
        return Receipt(Reply(200))
    unmapped = Unmapped(f"unknown TikTok event {event!r}", body.decode(errors="replace"))
    return Receipt(Reply(200), unmapped=(unmapped,))


def _content(payload: Obj) -> Obj | None:
    """``content`` is a JSON object serialised as a string (an object is accepted too)."""
    raw = payload.get("content")
    if isinstance(raw, str):
        try:
            return decode_object(raw.encode(), what="content")
        except WebhookMalformed:
            return None
    return as_obj(raw)


def _published(event: str, payload: Obj, content: Obj | None, account_id: str | None) -> Receipt:
    video_id = id_of(content, "post_id") or id_of(content, "video_id")
    if video_id is None:
        handle = id_of(content, "publish_id") or id_of(content, "share_id")
        return Receipt(
            Reply(200),
            ignored=f"{event} carries no video id (publish handle {handle}); "
            "the id arrives with post.publish.publicly_available",
        )
    created = int_of(payload, "create_time")
    published = NewContent(
        content_id=video_id,
        account_id=account_id,
        url=None,
        published_us=None if created is None else created * US_PER_S,
        type="video",
    )
    return Receipt(Reply(200), content=(published,))
