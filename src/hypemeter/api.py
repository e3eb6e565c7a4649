"""The HTTP edge shared by every capability: errors, authentication, responses.

Errors raised by services are mapped to HTTP here, once.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hypemeter.auth.model import TENANT_WIDE, Principal, RateState, ReadNarrowing, Scope
from hypemeter.errors import (
    BatchRejected,
    Conflict,
    Forbidden,
    Gone,
    HypemeterError,
    InvalidClient,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    TokenRequestRefused,
    Unauthenticated,
    UnsupportedMediaType,
)

log = logging.getLogger("hypemeter.api")

STATUS: dict[type[HypemeterError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    TokenRequestRefused: 400,
    InvalidClient: 401,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
    Overloaded: 503,
    StoreUnavailable: 503,
}


def _encode_other(value: Any) -> Any:
    """Objects that write their own JSON (see ``Columns``)."""
    json_of = getattr(value, "json", None)
    if json_of is None:
        raise NotImplementedError(f"cannot encode {type(value).__name__} as JSON")
    return msgspec.Raw(json_of())


_encoder = msgspec.json.Encoder(enc_hook=_encode_other)


def json_response(request: Request, payload: Any, status: int = 200) -> Response:
    """Encode with msgspec and add the caller's rate-limit headers, if any."""
    state: RateState | None = getattr(request.state, "rate", None)
    return Response(
        _encoder.encode(payload),
        status_code=status,
        media_type="application/json",
        headers=state.headers() if state is not None else None,
    )


def status_of(exc: HypemeterError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_body(exc: HypemeterError) -> dict[str, Any]:
    if isinstance(exc, TokenRequestRefused):
        return {"error": exc.code, "error_description": exc.message}  # RFC 6749 §5.2
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        error["field"] = exc.field
    error.update(exc.details())
    body: dict[str, Any] = {"error": error}
    if isinstance(exc, BatchRejected):
        body.update(
            accepted=0,
            duplicates=0,
            rejected=[{"index": r.index, "field": r.field, "error": r.error} for r in exc.rejected],
        )
    return body


async def handle_hypemeter_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HypemeterError)
    response = json_response(request, error_body(exc), status_of(exc))
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
        state = RateState(exc.limit, 0, exc.reset_after)
        response.headers.update(state.headers())
    elif isinstance(exc, Overloaded):
        response.headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, StoreUnavailable):
        response.headers["Retry-After"] = "5"
    elif isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="hypemeter"'
    elif isinstance(exc, TokenRequestRefused):
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        if isinstance(exc, InvalidClient):
            response.headers["WWW-Authenticate"] = 'Basic realm="hypemeter"'
    return response


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    name = ".".join(location) or None
    message = f"{name}: {first.get('msg', 'invalid')}" if name else str(first.get("msg", "invalid"))
    return json_response(
        request,
        {"error": {"code": "invalid_input", "message": message, "field": name}},
        422,
    )


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return json_response(
        request, {"error": {"code": code, "message": str(exc.detail)}}, exc.status_code
    )


def bearer_secret(request: Request) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or HTTP Basic with the key as user name."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        return user or password or None
    return None


def require(
    scope: Scope, *alternatives: Scope, narrowing: ReadNarrowing = TENANT_WIDE
) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: authenticate the key, check the scope (or one of the
    ``alternatives``), count the request.

    A read by a key limited to influencers or campaigns must name one of them where
    ``narrowing`` says; by default a route reads the whole tenant, which such a key
    may not, so a new route stays closed to it until it says how it is narrowed.
    """
    reads = Scope.READ in (scope, *alternatives)

    async def dependency(request: Request) -> Principal:
        services = request.app.state.services
        principal: Principal = services.auth.authenticate(bearer_secret(request))
        if not any(principal.allows(other) for other in alternatives):
            services.auth.authorize(principal, scope)
        if reads and principal.limits.narrows_reads:
            services.auth.authorize_read(
                principal, narrowing, _named_params(request, narrowing), _route_of(request)
            )
        request.state.rate = await services.rate_limiter.hit_request(principal.key_id)
        request.state.principal = principal
        return principal

    return dependency


def _named_params(request: Request, narrowing: ReadNarrowing) -> dict[str, list[str]]:
    """The values of the path or query parameters ``narrowing`` names."""
    out: dict[str, list[str]] = {}
    for name in (narrowing.influencer, narrowing.campaign):
        if name is None:
            continue
        if name in request.path_params:
            out[name] = [str(request.path_params[name])]
        else:
            out[name] = request.query_params.getlist(name)
    return out


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the errors a route may answer."""
    texts = {
        400: ("Invalid input; the body names the field or line", "invalid_input"),
        401: ("Missing, unknown or revoked API key", "unauthenticated"),
        403: ("The key lacks the required scope", "forbidden"),
        404: ("Not found", "not_found"),
        409: ("Already exists", "conflict"),
        410: ("It exists but is disabled; the message says why", "gone"),
        413: ("A request limit was exceeded; the body names the limit", "payload_too_large"),
        415: ("Content-Type or Content-Encoding not accepted", "unsupported_media_type"),
        422: ("A query or body parameter is invalid", "invalid_input"),
        429: ("Rate limit exceeded; see Retry-After and RateLimit-* headers", "rate_limited"),
        503: ("Overloaded or store unavailable; retry after Retry-After seconds", "overloaded"),
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text, code = texts[status]
        out[status] = {
            "description": text,
            "content": {
                "application/json": {
                    "example": {"error": {"code": code, "message": text, "field": None}}
                }
            },
        }
    return out
