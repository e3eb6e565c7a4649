"""YouTube push notifications over WebSub (PubSubHubbub).

Handshake: the hub's ``GET ?hub.mode=subscribe|unsubscribe&hub.topic=..&hub.challenge=..``
is answered 200 with exactly the challenge, as plain text; no challenge (or another
mode) is 404, which refuses. The subscriber must verify intent (WebSub 5.3): a
connector's topics are the feeds of its tenant's YouTube channels (``topic_for``),
and ``intends`` confirms a subscription to one of them, or an unsubscription from a
topic that is not, and nothing else, so a third party cannot subscribe the
callback to other feeds nor unsubscribe it from its own. The service supplies the
topics.

Deliveries are Atom XML signed ``X-Hub-Signature: sha1=<hex HMAC-SHA1(hub_secret, body)>``
(WebSub lets a hub name sha256/384/512 instead; those are checked the same way).
WebSub says a subscriber must still answer 2xx to a bad or missing signature and
drop the message, so that is a ``Receipt`` with ``ignored`` set, not a refusal.

Each ``<entry>`` becomes ``NewContent`` (type "video"). YouTube also pushes an
entry when an existing video's title or description changes, so the same video
may be announced again: content is keyed by its video id and is idempotent.
Pushes carry no statistics; counts are polled. A ``<at:deleted-entry>`` (video
deleted) announces nothing to record: when a feed holds only those, the receipt
is ``ignored`` with the deleted ids; it is not a dead letter.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from xml.etree.ElementTree import Element, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from hypemeter.connectors.webhooks.model import (
    NewContent,
    Receipt,
    Reply,
    Secrets,
    Unmapped,
    WebhookMalformed,
)
from hypemeter.connectors.webhooks.payload import rfc3339_us
from hypemeter.connectors.webhooks.verification import hmac_hex, require_secret, same

SIGNATURE_HEADER = "X-Hub-Signature"
# YouTube's hub signs with sha1; WebSub allows the sender to name a stronger one.
SIGNATURE_METHODS = frozenset({"sha1", "sha256", "sha384", "sha512"})
ATOM = "{http://www.w3.org/2005/Atom}"
YT = "{http://www.youtube.com/xml/schemas/2015}"
TOMBSTONES = "{http://purl.org/atompub/tombstones/1.0}"
VIDEO_ID_PREFIX = "yt:video:"
TOPIC = "https://www.youtube.com/xml/feeds/videos.xml?channel_id={channel}"


def topic_for(channel_id: str) -> str:
    """The WebSub topic of a YouTube channel's uploads."""
    return TOPIC.format(channel=channel_id)


def intends(query: Mapping[str, str], topics: Collection[str]) -> bool:
    """Whether a hub's verification request is one the connector wants: subscribing to
    one of ``topics``, or unsubscribing from a topic that is not among them."""
    topic = query.get("hub.topic", "")
    mode = query.get("hub.mode")
    if mode == "subscribe":
        return topic in topics
    return mode == "unsubscribe" and bool(topic) and topic not in topics


@dataclass(frozen=True, slots=True)
class YouTubeAdapter:
    """The YouTube WebSub adapter."""

    platform: str = "youtube"
    secret_names: tuple[str, ...] = ("hub_secret",)

    def answer_get(self, query: Mapping[str, str], secrets: Secrets, *, now_us: int) -> Reply:
        """Confirm a (un)subscription by echoing ``hub.challenge``; 404 refuses."""
        challenge = query.get("hub.challenge")
        if query.get("hub.mode") in {"subscribe", "unsubscribe"} and challenge:
            return Reply(200, challenge.encode())
        return Reply(404, b"no hub.challenge to confirm")

    def receive(
        self, headers: Mapping[str, str], body: bytes, secrets: Secrets, *, now_us: int
    ) -> Receipt:
        """Check ``X-Hub-Signature`` (a bad one is ignored with 200), then read the feed."""
        secret = require_secret(secrets, "hub_secret")
        given = headers.get(SIGNATURE_HEADER.lower(), "").strip()
        if not given:
            return Receipt(
                Reply(200), ignored=f"missing header {SIGNATURE_HEADER}", unverified=True
            )
        method = given.partition("=")[0].lower()[:16]
        if method not in SIGNATURE_METHODS:
            return Receipt(
                Reply(200),
                ignored=f"{SIGNATURE_HEADER} method {method!r} unsupported",
                unverified=True,
            )
        if not same(given, f"{method}=" + hmac_hex(secret, body, digest=method)):
            return Receipt(
                Reply(200), ignored=f"{SIGNATURE_HEADER} does not match", unverified=True
            )
        feed = _parse(body)
        parts = list(_entries(feed))
        deleted = [_deleted_ref(gone) for gone in feed.iter(f"{TOMBSTONES}deleted-entry")]
        if not parts and deleted:
            return Receipt(Reply(200), ignored=f"deleted-entry only: {', '.join(deleted)}")
        return Receipt.collect(Reply(200), parts)


def _parse(body: bytes) -> Element:
    try:
        return fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as error:
        raise WebhookMalformed(f"the WebSub body is not acceptable XML: {error}") from None


def _entries(feed: Element) -> Iterator[NewContent | Unmapped]:
    for entry in feed.iter(f"{ATOM}entry"):
        video_id = _text(entry, f"{YT}videoId") or _id_video(_text(entry, f"{ATOM}id"))
        if video_id is None:
            yield Unmapped("WebSub entry without a yt:videoId", tostring(entry, "unicode"))
            continue
        yield NewContent(
            content_id=video_id,
            account_id=_text(entry, f"{YT}channelId"),
            url=_alternate_link(entry),
            published_us=rfc3339_us(_text(entry, f"{ATOM}published")),
            type="video",
        )


def _text(element: Element, tag: str) -> str | None:
    found = element.find(tag)
    if found is None or not found.text:
        return None
    return found.text.strip() or None


def _id_video(atom_id: str | None) -> str | None:
    if atom_id is None or not atom_id.startswith(VIDEO_ID_PREFIX):
        return None
    return atom_id.removeprefix(VIDEO_ID_PREFIX) or None


def _alternate_link(entry: Element) -> str | None:
    for link in entry.iter(f"{ATOM}link"):
        if link.get("rel", "alternate") == "alternate" and link.get("href"):
            return link.get("href")
    return None


def _deleted_ref(tombstone: Element) -> str:
    return tombstone.get("ref") or "(no ref)"
