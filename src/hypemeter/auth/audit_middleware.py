"""Records audited requests: every change under /v1 made with a key, and every CSV export.

An ASGI middleware: it looks at the request's route and outcome and writes the
entry before the response leaves, so a client that saw the response finds the
entry. Ingest, webhooks and live push pass straight through (``is_audited_path``).
Request bodies are read for their top-level field names only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hypemeter.auth.audit import MUTATING, Action, describe, export_action, is_audited_path
from hypemeter.auth.audit_log import AuditLog
from hypemeter.auth.model import Principal

log = logging.getLogger("hypemeter.audit")
MAX_PEEK_BYTES = 64 * 1024


@dataclass(slots=True)
class _Exchange:
    """What the middleware saw of one request and its response."""

    scope: Scope
    body: bytearray = field(default_factory=bytearray)
    status: int = 500
    content_type: str = ""
    recorded: bool = False


class AuditMiddleware:
    def __init__(self, app: ASGIApp, *, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_audited_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope)
        mutating = scope["method"] in MUTATING

        async def peeking_receive() -> Message:
            message = await receive()
            if mutating and message["type"] == "http.request":
                room = MAX_PEEK_BYTES + 1 - len(exchange.body)
                exchange.body += message.get("body", b"")[: max(room, 0)]
            return message

        held: list[Message] = []

        async def recording_send(message: Message) -> None:
            if exchange.recorded:
                await send(message)
            elif message["type"] == "http.response.start":
                exchange.status = int(message["status"])
                exchange.content_type = _header(message, b"content-type")
                held.append(message)  # sent once the entry is written
            else:
                await self._record(exchange, message)
                for start in held:
                    await send(start)
                await send(message)

        try:
            await self.app(scope, peeking_receive, recording_send)
        finally:
            if not exchange.recorded:
                await self._record(exchange, None)

    async def _record(self, exchange: _Exchange, first_body: Message | None) -> None:
        exchange.recorded = True
        scope = exchange.scope
        principal = scope.get("state", {}).get("principal")
        if not isinstance(principal, Principal):
            return  # not authenticated (or refused before): nobody to name
        action, fields = _what(exchange, first_body)
        if action is None:
            return
        client = scope.get("client")
        try:
            await self.audit.record(
                principal.tenant_id,
                principal.key_id,
                action,
                status=exchange.status,
                ip=str(client[0]) if client else "",
                fields=fields,
            )
        except Exception:
            # The change itself is done; losing its entry must not turn it into an error
            # (a client that saw a 500 might repeat a change that was made).
            log.exception("audit entry not written", extra={"action": action.name})


def _what(exchange: _Exchange, first_body: Message | None) -> tuple[Action | None, tuple[str, ...]]:
    scope = exchange.scope
    method = scope["method"]
    if method not in MUTATING:
        if exchange.status < 400 and exchange.content_type.startswith("text/csv"):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            return export_action(scope["path"]), tuple(query)
        return None, ()
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return None, ()  # no route matched: nothing changed
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    created = _created_id(exchange, first_body) if method == "POST" else None
    action = describe(method, template, scope.get("path_params", {}), query, created)
    return action, _field_names(bytes(exchange.body), _header_of(scope, b"content-type"))


def _created_id(exchange: _Exchange, message: Message | None) -> str | None:
    if message is None or message.get("more_body") or exchange.status >= 300:
        return None
    body = message.get("body", b"")
    if not exchange.content_type.startswith("application/json") or len(body) > MAX_PEEK_BYTES:
        return None
    document = _json(body)
    found = (
        document.get("id") or document.get("subscription_id")
        if isinstance(document, dict)
        else None
    )
    return found if isinstance(found, str) else None


def _field_names(body: bytes, content_type: str) -> tuple[str, ...]:
    """The top-level names a body sent; never a value."""
    if not body or len(body) > MAX_PEEK_BYTES:
        return ()
    if content_type.startswith("application/x-www-form-urlencoded"):
        return tuple(parse_qs(body.decode("latin-1"), keep_blank_values=True))
    document = _json(body)
    return tuple(str(name) for name in document) if isinstance(document, dict) else ()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _header(message: Message, name: bytes) -> str:
    for key, value in message.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _header_of(scope: Scope, name: bytes) -> str:
    return _header({"headers": scope.get("headers", ())}, name)
