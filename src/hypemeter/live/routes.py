"""Live push over WebSocket (``/v1/stream``) and SSE (``/v1/stream/sse``), and stream tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from hypemeter.api import bearer_secret, error_responses, json_response, require
from hypemeter.auth.model import CHECKED_BY_ROUTE, Principal, Scope
from hypemeter.errors import HypemeterError
from hypemeter.live.access import open_caller
from hypemeter.live.hub import LiveHub
from hypemeter.live.model import (
    FILTER_FIELDS,
    TokenRights,
    check_limits,
    iso,
    parse_filter,
    parse_grain,
    parse_metrics,
)
from hypemeter.live.outbox import CLOSE_POLICY
from hypemeter.live.session import error_message
from hypemeter.live.stream_session import StreamSession, parse_last_seq
from hypemeter.live.tokens import StreamTokens
from hypemeter.live.websocket import serve

router = APIRouter(prefix="/v1", tags=["live"])
# Both check a key's influencer and campaign limits themselves (``check_limits``; a key
# revokes only the tokens it minted), so keys with such limits may use them.
Reader = Annotated[Principal, Depends(require(Scope.READ, narrowing=CHECKED_BY_ROUTE))]
# Revoking a stream token: the read key that minted it, or an admin key of the tenant.
Revoker = Annotated[
    Principal, Depends(require(Scope.READ, Scope.ADMIN, narrowing=CHECKED_BY_ROUTE))
]

_encode = msgspec.json.Encoder().encode


def _live(request_app: Any) -> tuple[LiveHub, StreamTokens]:
    services = request_app.state.services
    return services.live, services.stream_tokens


# -- WebSocket -------------------------------------------------------------------------


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """Subscribe, unsubscribe, tail and ping over one WebSocket; see docs/live.md."""
    hub, tokens = _live(websocket.app)
    await websocket.accept()
    secret = _ws_secret(websocket)
    try:
        caller = await open_caller(websocket.app.state.services, secret)
        await serve(websocket, hub, tokens.streams, caller)
    except HypemeterError as exc:
        with contextlib.suppress(Exception):
            await websocket.send_text(_encode({**error_message(exc), "seq": 0}).decode())
            await websocket.close(CLOSE_POLICY, exc.message[:120])


def _ws_secret(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return websocket.query_params.get("token")


# -- SSE -------------------------------------------------------------------------------


SSE_EXAMPLE = (
    "id: 1795996800000001\nevent: snapshot\ndata: "
    '{"filter":{"influencer_id":"inf-42"},"metrics":["likes"],"granularity":"minute",'
    '"since":"2026-11-20T00:00:00.000000Z","bucket":{"ts":"2026-11-20T14:05:00.000000Z",'
    '"likes":3},"totals":{"likes":120}}\n\n'
    "id: 1795996800000002\nevent: update\ndata: "
    '{"totals":{"likes":121},"bucket":{"ts":"2026-11-20T14:05:00.000000Z","likes":4},'
    '"deltas":[{"ts":"2026-11-20T14:05:00.000000Z","likes":1}],'
    '"committed_at":"2026-11-20T14:05:31.120331Z"}\n\n'
)


@router.get(
    "/stream/sse",
    summary="Live updates as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"example": SSE_EXAMPLE}},
            "description": "A snapshot, then updates; `id` is what Last-Event-ID resumes from",
        },
        **error_responses(400, 401, 403, 422, 429),
    },
)
async def stream_sse(
    request: Request,
    influencer_id: Annotated[str | None, Query()] = None,
    campaign_id: Annotated[str | None, Query()] = None,
    content_id: Annotated[str | None, Query()] = None,
    platform: Annotated[str | None, Query()] = None,
    metrics: Annotated[str | None, Query(examples=["likes,comments,engagement_rate"])] = None,
    granularity: Annotated[str | None, Query(description="minute, hour or day")] = None,
    since: Annotated[str | None, Query(description="Totals from (default: today, UTC)")] = None,
    token: Annotated[str | None, Query(description="A stream token instead of a key")] = None,
) -> StreamingResponse:
    hub, tokens = _live(request.app)
    caller = await open_caller(request.app.state.services, bearer_secret(request) or token)
    message = {
        "filter": {
            n: v
            for n, v in zip(
                FILTER_FIELDS, (influencer_id, campaign_id, content_id, platform), strict=True
            )
            if v is not None
        },
        "metrics": metrics,
        "granularity": granularity,
        "since": since,
    }
    session = await StreamSession.open(
        hub,
        tokens.streams,
        caller,
        message,
        last_seq=parse_last_seq(request.headers.get("last-event-id")),
    )
    return StreamingResponse(
        _sse_events(session),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse_events(session: StreamSession) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(session.frames()) as frames:
        async for frame in frames:
            if frame is None:
                yield b": heartbeat\n\n"
            else:
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (
                    frame.seq,
                    frame.kind.encode(),
                    frame.data,
                )


# -- stream tokens ------------------------------------------------------------------------


class SubscribeBody(BaseModel):
    """What a stream token may follow: one influencer, campaign or content item, or, naming
    none of them, the whole tenant."""

    model_config = {"extra": "forbid"}

    influencer_id: str | None = Field(default=None, max_length=256, examples=["inf-42"])
    campaign_id: str | None = Field(default=None, max_length=256, examples=["summer-drop"])
    content_id: str | None = Field(default=None, max_length=256, examples=["post-9001"])
    platform: str | None = Field(default=None, max_length=64, examples=["instagram"])
    metrics: list[str] = Field(
        default_factory=lambda: ["likes", "comments", "shares"],
        examples=[["likes", "engagement_rate"]],
    )
    granularity: str | None = Field(default=None, examples=["minute"])
    tail: bool = Field(
        default=False,
        description="Also let the token tail raw events (user ids and comment text) of its "
        "filter and metrics",
    )


SUBSCRIBE_EXAMPLE = {
    "subscription_id": "sub_5f2c9a0b1d3e4f60",
    "stream_url": "/v1/stream?token=hst_...",
    "sse_url": "/v1/stream/sse?influencer_id=inf-42&metrics=likes,engagement_rate&token=hst_...",
    "token": "hst_...",
    "expires_at": "2026-11-20T15:00:00.000000Z",
}


@router.post(
    "/metrics/subscribe",
    status_code=201,
    summary="A short-lived, read-only stream token for one filter",
    responses={
        201: {"content": {"application/json": {"example": SUBSCRIBE_EXAMPLE}}},
        **error_responses(400, 401, 403, 422, 429),
    },
)
async def create_stream_token(request: Request, body: SubscribeBody, principal: Reader) -> Response:
    hub, tokens = _live(request.app)
    raw = body.model_dump()
    live_filter = parse_filter(
        {n: raw[n] for n in FILTER_FIELDS if raw[n] is not None}, field="body"
    )
    names = hub.metric_names(principal.tenant_id, parse_metrics(body.metrics))
    # A token carries no more than its key may follow.
    check_limits(principal.limits, live_filter, names, field="body")
    grain = parse_grain(body.granularity)
    now = hub.clock.now_us()
    secret, token = await tokens.issue(
        tenant_id=principal.tenant_id,
        key_id=principal.key_id,
        rights=TokenRights(live_filter, names, body.tail),
        expires_us=now + hub.config.token_s * 1_000_000,
        now_us=now,
    )
    query = urlencode(
        {
            **live_filter.payload(),
            "metrics": ",".join(names),
            "granularity": grain.value,
            "token": secret,
        }
    )
    payload = {
        "subscription_id": token.subscription_id,
        "stream_url": f"/v1/stream?{urlencode({'token': secret})}",
        "sse_url": f"/v1/stream/sse?{query}",
        "token": secret,
        "expires_at": iso(token.expires_us),
    }
    return json_response(request, payload, 201)


@router.delete(
    "/metrics/subscribe/{subscription_id}",
    summary="Revoke a stream token; the streams it opened close",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {"subscription_id": "sub_5f2c9a0b1d3e4f60", "closed_streams": 1}
                }
            }
        },
        **error_responses(401, 403, 404, 422, 429),
    },
)
async def revoke_stream_token(
    request: Request, subscription_id: str, principal: Revoker
) -> Response:
    """A read key revokes only the tokens it minted (another's is a 404, as if absent);
    an admin key revokes any token of its tenant."""
    _, tokens = _live(request.app)
    minted_by = None if principal.allows(Scope.ADMIN) else principal.key_id
    token, closed = await tokens.revoke(principal.tenant_id, subscription_id, key_id=minted_by)
    return json_response(
        request, {"subscription_id": token.subscription_id, "closed_streams": closed}
    )
