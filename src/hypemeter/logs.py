"""Structured JSON logs carrying the request id of the request being served.

Logs never hold a credential. Every record that reaches the process's handler,
and every record of the libraries that write URLs (httpx, httpcore, uvicorn's
access log), passes ``RedactSecrets``: query parameters whose names say they
carry a secret (``access_token``, ``key``, ``client_secret``, ``refresh_token``,
``code``, ``hub.verify_token``, ``signature``...) and ``Bearer``/``Basic``
credentials are replaced by ``[redacted]``. Third-party loggers stay at WARNING
whatever the level asked for, so a request log line is never written at all.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access = logging.getLogger("hypemeter.access")
log = logging.getLogger("hypemeter.api")

REDACTED = "[redacted]"
# A query parameter (or form field) whose name ends like one of these carries a secret.
_SECRET_PARAM = re.compile(
    r"(?P<name>(?:^|(?<=[?&;\s\"'(]))[\w.\-]*?"
    r"(?:token|secret|signature|sig|password|passwd|key|code))=(?P<value>[^&#\s\"'<>)]+)",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"(?P<scheme>\b(?:bearer|basic|oauth)\s+)[\w.~+/=\-]+", re.IGNORECASE)
_KEY_HEADER = re.compile(
    r"(?P<name>\b[\w-]*api[-_]?key[\"']?\s*[:,]\s*[\"']?)[^\s\"',}\]]+", re.IGNORECASE
)
# Libraries that log URLs and headers: filtered, and held at WARNING.
THIRD_PARTY = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "hpack",
    "websockets",
    "asyncio",
)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}


def redact(text: str) -> str:
    """``text`` with secret-carrying query parameters and authorization credentials
    replaced by ``[redacted]``."""
    if "=" in text:
        text = _SECRET_PARAM.sub(lambda m: f"{m['name']}={REDACTED}", text)
    text = _KEY_HEADER.sub(lambda m: f"{m['name']}{REDACTED}", text)
    return _AUTH_SCHEME.sub(lambda m: f"{m['scheme']}{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, string extras and traceback without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: keep what we can show
            message = str(record.msg)
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, redact(value))
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class _RedactingJsonFormatter(JsonFormatter):
    # python-json-logger widens logging's return type (a list with exc_info_as_array).
    def formatException(self, ei: Any) -> str | list[str]:  # type: ignore[override]  # noqa: N802
        formatted = super().formatException(ei)
        if isinstance(formatted, str):
            return redact(formatted)
        return [redact(line) for line in formatted]


_REDACTOR = RedactSecrets()


def protect_logs() -> None:
    """Filter the records of the libraries that write URLs (idempotent)."""
    for name in (*THIRD_PARTY, "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str) -> None:
    """Send every log record, uvicorn's included, to stderr as one JSON object per line,
    without secrets; third-party libraries log warnings and errors only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _RedactingJsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(_REDACTOR)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    protect_logs()


Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]
Observer = Callable[[str, str, str, int, float], None]


class RequestContextMiddleware:
    """Pure ASGI: assigns X-Request-ID, times the request, writes the access log."""

    def __init__(self, app: ASGIApp, *, observe: Observer, access_log: bool) -> None:
        self.app = app
        self.observe = observe
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and len(incoming) <= 128 else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        started_response = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Answer here, inside the request's context, so even a 500 carries its id.
            log.exception("unhandled error")
            if not started_response:
                await _internal_error(send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            principal = scope.get("state", {}).get("principal")
            tenant = getattr(principal, "tenant_id", "")
            self.observe(tenant, scope["method"], template, status, elapsed)
            if self.access_log:
                access.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            request_id.reset(token)


async def _internal_error(send: Send) -> None:
    body = b'{"error":{"code":"internal","message":"internal error; see the server log"}}'
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None
