"""HTTPS: Strict-Transport-Security on every answer to a request that came over TLS.

Whether a request came over TLS is the ASGI scope's scheme: ``https`` (or
``wss``) when uvicorn terminates TLS itself (``serve --ssl-certfile``), or when a
trusted proxy (``--forwarded-allow-ips``) says so in ``X-Forwarded-Proto``.
Browsers ignore the header over plain HTTP (RFC 6797), and sending it there
would only mislead, so plain HTTP answers go without it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURE_SCHEMES = frozenset({"https", "wss"})


def hsts_value(max_age: int) -> str:
    # No includeSubDomains: the API's host names no other service's.
    return f"max-age={max_age}"


class StrictTransportSecurity:
    """ASGI middleware adding ``Strict-Transport-Security`` to HTTPS answers."""

    def __init__(self, app: ASGIApp, *, max_age: int) -> None:
        self.app = app
        self.header = (b"strict-transport-security", hsts_value(max_age).encode())
        self.enabled = max_age > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope.get("scheme") not in SECURE_SCHEMES:
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != self.header[0]]
                message["headers"] = [*headers, self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)
