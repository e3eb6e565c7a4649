"""``POST /v1/oauth/token``: the OAuth 2.0 token endpoint (client credentials grant)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from hypemeter.api import json_response
from hypemeter.auth.oauth import FORM_TYPE, MAX_FORM_BYTES, token_request

router = APIRouter(prefix="/v1/oauth", tags=["auth"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": text,
        "content": {
            "application/json": {
                "example": {"error": code, "error_description": "client authentication failed"}
            }
        },
    }
    for status, text, code in (
        (400, "invalid_request, unsupported_grant_type or invalid_scope", "invalid_scope"),
        (401, "invalid_client: the key id and key did not authenticate", "invalid_client"),
    )
}


@router.post(
    "/token",
    summary="Trade an API key for a short-lived access token (OAuth 2.0 client credentials)",
    description=(
        "Form body (`application/x-www-form-urlencoded`): `grant_type=client_credentials` and "
        "optionally `scope` (space-separated, a subset of the key's scopes). Authenticate "
        "with HTTP Basic (`client_id` = the key's id, `client_secret` = the key) or the form "
        "fields `client_id` and `client_secret`. The token works wherever a key does, "
        "until it expires or its key is revoked."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                FORM_TYPE: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "scope": {"type": "string"},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                        },
                    },
                    "example": {"grant_type": "client_credentials", "scope": "read"},
                }
            },
        }
    },
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9...",
                        "token_type": "Bearer",
                        "expires_in": 900,
                        "scope": "read",
                    }
                }
            }
        },
        **_ERRORS,
    },
)
async def issue_token(request: Request) -> Response:
    services = request.app.state.services
    body = await _bounded_body(request)
    headers = request.headers
    wanted = token_request(body, headers.get("content-type", ""), headers.get("authorization"))
    principal = services.token_issuer.client(wanted)
    request.state.rate = await services.rate_limiter.hit_request(principal.key_id)
    request.state.principal = principal  # who, for the audit log
    issued = services.token_issuer.issue(principal, wanted)
    response = json_response(
        request,
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": " ".join(sorted(s.value for s in issued.scopes)),
        },
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


async def _bounded_body(request: Request) -> bytes:
    """At most one byte past the limit is read, so a huge body costs nothing."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            break
    return bytes(body)
