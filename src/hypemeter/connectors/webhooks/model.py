"""Value types shared by every platform's webhook adapter, and the adapter port.

Pure: no I/O. An adapter turns one verified HTTP request into a ``Receipt``;
the service stores what the receipt carries and answers with its ``reply``.

Errors (the service maps them to HTTP; they are not ``HypemeterError``s)::

    Exception
    ├── WebhookRefused     401/403  missing, wrong or stale signature
    └── WebhookMalformed   400      verified, but the body is not JSON/XML at all, or
                                    the message is of a kind the signature does not cover
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

Secrets = Mapping[str, str]
"""The connector's configured secrets, by name (see ``WebhookAdapter.secret_names``)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the HTTP layer answers the platform."""

    status: int
    body: bytes = b""
    media_type: str = "text/plain"


@dataclass(frozen=True, slots=True)
class MappedEvent:
    """One engagement event in Hypemeter's schema.

    ``event_id`` is derived from the platform's own ids, so a redelivery maps to
    the same id and is stored once. ``kind`` is "delta" or "snapshot".
    """

    event_id: str
    metric: str
    value: float
    kind: str
    ts_us: int
    account_id: str | None
    content_id: str | None
    user_id: str | None = None
    text: str | None = None
    properties: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class NewContent:
    """Content the platform announced (a new video, a published post)."""

    content_id: str
    account_id: str | None
    url: str | None
    published_us: int | None
    type: str


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A verified part of a delivery that cannot be mapped: it goes to dead letters."""

    reason: str
    payload: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of one verified POST.

    ``disable`` says why the platform revoked our access (the connector should
    stop); ``ignored`` says why the body was deliberately not processed.
    ``message_id`` names the delivery as its signature covers it (Twitch's message
    id, TikTok's signed timestamp and digest): the same id again is a replay.
    """

    reply: Reply
    events: tuple[MappedEvent, ...] = ()
    content: tuple[NewContent, ...] = ()
    unmapped: tuple[Unmapped, ...] = ()
    disable: str | None = None
    ignored: str | None = None
    # Set when the signature failed but the protocol wants a 2xx anyway (WebSub).
    unverified: bool = False
    message_id: str | None = None

    @classmethod
    def collect(
        cls,
        reply: Reply,
        parts: Iterable[MappedEvent | NewContent | Unmapped],
        *,
        disable: str | None = None,
        ignored: str | None = None,
        message_id: str | None = None,
    ) -> Receipt:
        """A receipt holding ``parts`` sorted into events, content and dead letters."""
        items = list(parts)
        return cls(
            reply=reply,
            events=tuple(item for item in items if isinstance(item, MappedEvent)),
            content=tuple(item for item in items if isinstance(item, NewContent)),
            unmapped=tuple(item for item in items if isinstance(item, Unmapped)),
            disable=disable,
            ignored=ignored,
            message_id=message_id,
        )


class WebhookRefused(Exception):
    """The request is not proven to come from the platform (status 401 or 403)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class WebhookMalformed(Exception):
    """The request verified but cannot be processed (``field`` names the header or the
    body at fault); the service answers 400."""

    def __init__(self, reason: str, *, field: str = "body") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class WebhookAdapter(Protocol):
    """One platform's webhook mechanism: handshake, signature check and mapping.

    ``headers`` keys arrive lower-cased; ``now_us`` is the receive time.
    """

    @property
    def platform(self) -> str: ...

    @property
    def secret_names(self) -> tuple[str, ...]: ...

    def answer_get(self, query: Mapping[str, str], secrets: Secrets, *, now_us: int) -> Reply:
        """Answer the platform's GET handshake (405 where the platform has none)."""
        ...

    def receive(
        self, headers: Mapping[str, str], body: bytes, secrets: Secrets, *, now_us: int
    ) -> Receipt:
        """Verify one POST over its raw bytes, then map it.

        Raises WebhookRefused (missing, wrong or stale signature) and
        WebhookMalformed (verified but unparseable body).
        """
        ...
