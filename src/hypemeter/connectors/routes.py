"""HTTP routes of the connectors: configuration and dead letters (admin scope), and the
webhook receivers, which platforms call with their own signatures instead of a key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.model import Principal, Scope
from hypemeter.connectors.model import (
    PLATFORMS,
    connector_view,
    letter_summary,
    letter_view,
    without_details,
)
from hypemeter.connectors.service import ConnectorService
from hypemeter.connectors.webhooks import WebhookRefused
from hypemeter.errors import PayloadTooLarge
from hypemeter.registry.model import rfc3339

admin = APIRouter(prefix="/v1/admin", tags=["connectors"])
webhooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
ingestion = APIRouter(prefix="/v1/ingestion", tags=["ingest"])
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
Reader = Annotated[Principal, Depends(require(Scope.READ))]
HEALTH_LETTERS = 20
ADMIN_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429)
MAX_WEBHOOK_BYTES = 4 * 1024 * 1024  # Meta batches up to 1000 changes in one request
# Handshakes echo what the caller sent: never let a browser take it for HTML.
PLAIN = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


CONNECTOR_EXAMPLE = {
    "id": "con_3f9a0c1d2e4b5a69",
    "platform": "instagram",
    "callback_url": "/v1/webhooks/instagram/con_3f9a0c1d2e4b5a69",
    "secrets": ["app_secret", "verify_token"],
    "credentials": 1,
    "poll": {},
    "created_at": "2026-11-20T14:00:00.000000Z",
    "disabled": None,
    "health": {
        "deliveries": 12,
        "refused": 0,
        "dead_letters": 1,
        "replays": 0,
        "last_success": "2026-11-20T14:05:00.000000Z",
        "last_error": None,
        "last_error_detail": None,
        "last_error_at": None,
    },
    "polling": {
        "calls": 40,
        "calls_in_window": 3,
        "window_seconds": 3600,
        "quota_left": None,
        "paused_credentials": 0,
        "next_poll": "2026-11-20T14:06:00.000000Z",
        "last_success": "2026-11-20T14:05:00.000000Z",
        "last_error": None,
        "last_error_detail": None,
        "last_error_at": None,
        "failing": False,
        "tokens": {
            "expires_at": "2027-01-10T09:00:00.000000Z",
            "last_refresh": "2026-11-11T09:00:00.000000Z",
            "refresh_error": None,
            "refresh_error_detail": None,
            "refresh_error_at": None,
        },
    },
}
LETTER_EXAMPLE = {
    "id": "dl_0006617b25a523c4ed607a4d",
    "connector_id": "con_3f9a0c1d2e4b5a69",
    "platform": "instagram",
    "received_us": 1795183200000000,
    "reasons": ["event ig:comment:178657: influencer_id is required, unless ..."],
    "state": "open",
    "replays": 0,
    "body": '{"object": "instagram", "entry": [...]}',
}


def _documented(status: int, example: Any) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"description": "OK", "content": {"application/json": {"example": example}}},
        **ADMIN_ERRORS,
    }


class ConnectorIn(BaseModel, extra="forbid"):
    platform: str = Field(description=", ".join(PLATFORMS), examples=["instagram"])
    secrets: dict[str, Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        description="Write-only: Meta app_secret and verify_token, YouTube hub_secret, "
        "TikTok client_secret, X consumer_secret, LinkedIn client_secret, Twitch "
        "eventsub_secret",
        examples=[{"app_secret": "...", "verify_token": "..."}],
        max_length=16,
    )
    credentials: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=100,
        description="For polling: Instagram access_token, YouTube api_key, TikTok "
        "access_token, X bearer_token (one object per credential). Tokens that expire: "
        "expires_at (RFC 3339) or expires_in (seconds); TikTok also refresh_token, "
        "client_key and refresh_expires_at or refresh_expires_in. They are refreshed "
        "before they expire",
        examples=[[{"access_token": "...", "expires_in": 5183944}]],
    )
    poll: dict[str, Any] = Field(
        default_factory=dict,
        description="enabled, curve [[max age s | null, interval s], ...], window_calls, "
        "window_s, capacity, refill_per_s, daily_units",
        examples=[{"curve": [[3600, 60], [None, 3600]]}],
    )


def _polling(request: Request, connector_id: str) -> dict[str, Any] | None:
    services = request.app.state.services
    status = services.pollers.status(connector_id) if services.pollers is not None else None
    websub = services.websub.status(connector_id) if services.websub is not None else None
    if websub is not None:
        status = {**(status or {}), "websub": websub}
    return status


def _service(request: Request) -> ConnectorService:
    service: ConnectorService = request.app.state.services.connectors
    return service


@admin.post(
    "/connectors",
    status_code=201,
    summary="Configure a platform connector; answers its webhook callback URL",
    responses=_documented(201, CONNECTOR_EXAMPLE),
)
async def create_connector(request: Request, body: ConnectorIn, principal: Admin) -> Response:
    service = _service(request)
    connector = await service.create(
        principal.tenant_id,
        body.platform.strip().lower(),
        body.secrets,
        credentials=body.credentials,
        poll=body.poll,
    )
    view = connector_view(connector, service.health(connector.id), _polling(request, connector.id))
    return json_response(request, view, 201)


@admin.get(
    "/connectors",
    summary="This tenant's connectors and their health",
    responses=_documented(200, {"data": [CONNECTOR_EXAMPLE]}),
)
async def list_connectors(request: Request, principal: Admin) -> Response:
    found = await _service(request).connectors(principal.tenant_id)
    views = [connector_view(c, h, _polling(request, c.id)) for c, h in found]
    return json_response(request, {"data": views})


@admin.delete(
    "/connectors/{connector_id}",
    summary="Remove a connector",
    responses=_documented(200, {"id": "con_3f9a0c1d2e4b5a69", "deleted": True}),
)
async def delete_connector(request: Request, connector_id: str, principal: Admin) -> Response:
    await _service(request).delete(principal.tenant_id, connector_id)
    return json_response(request, {"id": connector_id, "deleted": True})


@admin.get(
    "/dead-letters",
    summary="Verified deliveries that could not be counted in full, oldest first",
    responses=_documented(200, {"data": [LETTER_EXAMPLE], "next_cursor": None}),
)
async def list_dead_letters(
    request: Request,
    principal: Admin,
    connector_id: str | None = None,
    state: Annotated[str | None, Query(pattern="^(open|resolved)$")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    page, next_cursor = await _service(request).dead_letters(
        principal.tenant_id, connector_id=connector_id, state=state, cursor=cursor, limit=limit
    )
    return json_response(
        request, {"data": [letter_view(letter) for letter in page], "next_cursor": next_cursor}
    )


@admin.post(
    "/dead-letters/{letter_id}/replay",
    summary="Process a dead letter's delivery again (after fixing its cause)",
    responses=_documented(
        200,
        {"dead_letter": {**LETTER_EXAMPLE, "state": "resolved"}, "accepted": 1, "duplicates": 0},
    ),
)
async def replay_dead_letter(request: Request, letter_id: str, principal: Admin) -> Response:
    letter, outcome = await _service(request).replay(principal.tenant_id, letter_id)
    return json_response(
        request,
        {
            "dead_letter": letter_view(letter),
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
        },
    )


@admin.delete(
    "/dead-letters/{letter_id}",
    summary="Delete a dead letter and the raw delivery it keeps",
    responses=_documented(200, {"id": LETTER_EXAMPLE["id"], "deleted": True}),
)
async def delete_dead_letter(request: Request, letter_id: str, principal: Admin) -> Response:
    await _service(request).delete_letter(principal.tenant_id, letter_id)
    return json_response(request, {"id": letter_id, "deleted": True})


@admin.delete(
    "/dead-letters",
    summary="Delete this tenant's dead letters, of one connector or in one state if given",
    description="Dead letters are also deleted on their own HYPEMETER_DEAD_LETTER_DAYS after "
    "they were received or last replayed.",
    responses=_documented(200, {"deleted": 12}),
)
async def delete_dead_letters(
    request: Request,
    principal: Admin,
    connector_id: str | None = None,
    state: Annotated[str | None, Query(pattern="^(open|resolved)$")] = None,
) -> Response:
    deleted = await _service(request).delete_letters(
        principal.tenant_id, connector_id=connector_id, state=state
    )
    return json_response(request, {"deleted": deleted})


@webhooks.get(
    "/{platform}/{connector_id}",
    summary="The platform's subscription handshake (Meta, YouTube, X, LinkedIn)",
    responses={
        200: {"description": "The challenge", "content": {"text/plain": {"example": "1158201444"}}},
        403: {"description": "Wrong verify token", "content": {"text/plain": {"example": "..."}}},
        **error_responses(404, 410, 422),
    },
)
async def webhook_handshake(request: Request, platform: str, connector_id: str) -> Response:
    reply = await _service(request).handshake(
        platform, connector_id, dict(request.query_params.items())
    )
    return Response(reply.body, reply.status, headers=PLAIN, media_type=reply.media_type)


@webhooks.post(
    "/{platform}/{connector_id}",
    summary="A platform's signed delivery; verified over the raw body",
    responses={
        200: {"description": "Stored", "content": {"text/plain": {"example": ""}}},
        **error_responses(400, 401, 403, 404, 410, 413, 422, 503),
    },
)
async def webhook_delivery(request: Request, platform: str, connector_id: str) -> Response:
    service = _service(request)
    await service.require_active(platform, connector_id)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            raise PayloadTooLarge(
                f"webhook body exceeds {MAX_WEBHOOK_BYTES} bytes",
                limit="max_webhook_bytes",
                value=MAX_WEBHOOK_BYTES,
            )
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        outcome = await service.receive(platform, connector_id, headers, bytes(body))
    except WebhookRefused as exc:
        error = {"error": {"code": "invalid_signature", "message": exc.reason}}
        return json_response(request, error, exc.status)
    reply = outcome.reply
    return Response(reply.body, reply.status, headers=PLAIN, media_type=reply.media_type)


HEALTH_EXAMPLE = {
    "window_minutes": 60,
    "minutes": [
        {"ts": "2026-11-20T14:05:00.000000Z", "accepted": 1180, "duplicates": 3, "rejected": 1}
    ],
    "totals": {"accepted": 1180, "duplicates": 3, "rejected": 1},
    "recent_rejections": [
        {
            "at": "2026-11-20T14:05:12.000000Z",
            "scope": "event",
            "index": 4,
            "field": "ts",
            "error": "ts is more than 300 s in the future",
        }
    ],
    "dead_letters": {
        "open": [
            {
                "id": "dl_0006617b25a523c4ed607a4d",
                "connector_id": "con_3f9a0c1d2e4b5a69",
                "platform": "instagram",
                "received_at": "2026-11-20T14:00:00.000000Z",
                "reasons": ["event ig:comment:178657: influencer_id is required"],
            }
        ],
        "more": False,
    },
    "connectors": [
        {
            "id": "con_3f9a0c1d2e4b5a69",
            "platform": "instagram",
            "disabled": None,
            "health": CONNECTOR_EXAMPLE["health"],
            "polling": None,
        }
    ],
}


@ingestion.get(
    "/health",
    summary="Ingest of the last hour per minute, recent rejections, dead letters, connectors",
    description="Read scope: what the dashboard's ingestion page shows. Counts are this "
    "server process's (on a cluster, each API process answers for what it received); "
    "connectors show their health without any secret or credential. What platforms "
    "answered and excerpts of what deliveries held (the *_detail members, dead letters' "
    "full reasons) show to admin keys only; other keys see the reasons in Hypemeter's "
    "own words.",
    responses={
        200: {"content": {"application/json": {"example": HEALTH_EXAMPLE}}},
        **error_responses(401, 403, 429),
    },
)
async def ingestion_health(request: Request, principal: Reader) -> Response:
    tenant_id = principal.tenant_id
    recent = request.app.state.services.ingest.stats.health(tenant_id)
    minutes = [{**m, "ts": rfc3339(m["ts"])} for m in recent["minutes"]]
    totals = {
        name: sum(m[name] for m in minutes) for name in ("accepted", "duplicates", "rejected")
    }
    service = _service(request)
    letters, more = await service.dead_letters(
        tenant_id, connector_id=None, state="open", cursor=None, limit=HEALTH_LETTERS
    )
    admin = principal.allows(Scope.ADMIN)
    connectors = []
    for connector, health in await service.connectors(tenant_id):
        view = connector_view(connector, health, _polling(request, connector.id))
        connectors.append({k: view[k] for k in ("id", "platform", "disabled", "health", "polling")})
    payload = {
        "window_minutes": len(minutes),
        "minutes": minutes,
        "totals": totals,
        "recent_rejections": [{**r, "at": rfc3339(r["at"])} for r in recent["recent_rejections"]],
        "dead_letters": {
            "open": [
                {**letter_summary(letter, admin=admin), "received_at": rfc3339(letter.received_us)}
                for letter in letters
            ],
            "more": more is not None,
        },
        "connectors": connectors if admin else without_details(connectors),
    }
    return json_response(request, payload)
