"""Live push over WebSocket (``/v1/stream``) and SSE (``/v1/stream/sse``), and stream tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hypemeter.api import bearer_secret, error_responses, json_response, require
from hypemeter.auth.model import Principal, Scope
from hypemeter.errors import (
    Forbidden,
    HypemeterError,
    InvalidInput,
    RateLimited,
    Unauthenticated,
)
from hypemeter.live.hub import Channel, ChannelKey, LiveHub, TailTarget
from hypemeter.live.model import (
    FILTER_FIELDS,
    LiveFilter,
    iso,
    parse_filter,
    parse_grain,
    parse_metrics,
    parse_since,
)
from hypemeter.live.tokens import StreamToken, StreamTokens

log = logging.getLogger("hypemeter.live")
router = APIRouter(prefix="/v1", tags=["live"])
Reader = Annotated[Principal, Depends(require(Scope.READ))]
MAX_MESSAGE_BYTES = 64 * 1024
CLOSE_LAGGING = 1013  # try again later
CLOSE_POLICY = 1008

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(slots=True)
class Caller:
    """Who is on a live connection: a read key, or a stream token limited to its filter."""

    principal: Principal
    token: StreamToken | None = None

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def key_id(self) -> str:
        return self.principal.key_id

    def check(self, live_filter: LiveFilter, metrics: tuple[str, ...] | None) -> None:
        """A token may not widen its filter nor add metrics."""
        token = self.token
        if token is None:
            return
        if not live_filter.within(token.filter):
            raise Forbidden(
                f"this stream token is limited to {token.filter.payload()}", field="filter"
            )
        if metrics is not None and not token.allows_metrics(metrics):
            raise Forbidden(
                f"this stream token is limited to the metrics {', '.join(token.metrics)}",
                field="metrics",
            )


def _live(request_app: Any) -> tuple[LiveHub, StreamTokens]:
    services = request_app.state.services
    return services.live, services.stream_tokens


async def authenticate(app: Any, secret: str | None) -> Caller:
    services = app.state.services
    tokens: StreamTokens = services.stream_tokens
    if secret and tokens.is_token(secret):
        token = await tokens.resolve(secret, services.live.clock.now_us())
        if token is None:
            raise Unauthenticated("unknown, expired or revoked stream token", field="token")
        return Caller(
            Principal(token.tenant_id, f"token:{token.subscription_id}", frozenset({Scope.READ})),
            token,
        )
    principal: Principal = services.auth.authenticate(secret)
    services.auth.authorize(principal, Scope.READ)
    return Caller(principal)


def _error(exc: HypemeterError, sub_id: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
    if sub_id is not None:
        body["id"] = sub_id
    if exc.field is not None:
        body["field"] = exc.field
    return body


def _key(caller: Caller, message: dict[str, Any], hub: LiveHub) -> ChannelKey:
    live_filter = parse_filter(message.get("filter"))
    names = hub.metric_names(caller.tenant_id, parse_metrics(message.get("metrics")))
    caller.check(live_filter, names)
    return ChannelKey(
        caller.tenant_id,
        live_filter,
        ",".join(names),
        parse_grain(message.get("granularity")),
        parse_since(message.get("since"), hub.clock.now_us()),
    )


# -- WebSocket -------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Sub:
    """One subscription of a WebSocket connection: a link of its channel."""

    connection: Connection
    sub_id: str
    channel: Channel

    def deliver(self, kind: str, body: dict[str, Any], seq: int) -> None:
        self.connection.send({"type": kind, "id": self.sub_id, **body})


@dataclass(eq=False, slots=True)
class _Tail:
    connection: Connection
    sub_id: str

    def events(self, rows: list[dict[str, Any]]) -> None:
        # One message per commit: a large commit is one message, not a burst.
        self.connection.send({"type": "event", "id": self.sub_id, "events": rows})


@dataclass(eq=False, slots=True)
class Connection:
    """One WebSocket: its subscriptions, and a bounded outbox its writer drains."""

    websocket: WebSocket
    hub: LiveHub
    caller: Caller
    subs: dict[str, _Sub] = field(default_factory=dict)
    tails: dict[str, TailTarget] = field(default_factory=dict)
    outbox: deque[str] = field(default_factory=deque)  # JSON text frames
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    seq: int = 0
    lags: int = 0
    sent_at: float = 0.0
    close_code: int = 1000
    close_reason: str = ""

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message with the next ``seq``; never waits."""
        if self.done.is_set():
            return
        if len(self.outbox) >= self.hub.config.queue_messages:
            self._lag()
            return
        self.seq += 1
        message["seq"] = self.seq
        self.outbox.append(_encode(message).decode())
        self.wake.set()

    def _lag(self) -> None:
        """The client fell behind: drop what it has not read, say so, start it afresh."""
        dropped = len(self.outbox)
        self.outbox.clear()
        self.lags += 1
        if self.lags >= self.hub.config.max_lags:
            self.close(CLOSE_LAGGING, "the client kept falling behind; reconnect")
            return
        self.send({"type": "lagged", "dropped": dropped})
        for sub in self.subs.values():
            sub.deliver("snapshot", sub.channel.snapshot(), sub.channel.seq)

    def close(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        self.done.set()
        self.wake.set()

    async def writer(self) -> None:
        while not self.done.is_set():
            if not self.outbox:
                self.wake.clear()
                await self.wake.wait()
                continue
            await self.websocket.send_text(self.outbox.popleft())
            self.sent_at = time.monotonic()
            if not self.outbox:
                self.lags = 0  # caught up

    async def heartbeat(self) -> None:
        """A heartbeat after every quiet ``heartbeat_s``."""
        every = self.hub.config.heartbeat_s
        while not self.done.is_set():
            wait = self.sent_at + every - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if not self.outbox:
                self.send({"type": "heartbeat", "ts": iso(self.hub.clock.now_us())})
            # With messages queued the writer is waiting on the client: look again later.
            self.sent_at = time.monotonic()

    async def reader(self) -> None:
        while not self.done.is_set():
            raw = await self.websocket.receive()
            if raw["type"] == "websocket.disconnect":
                self.done.set()
                return
            data = raw.get("text") or raw.get("bytes") or b""
            if len(data) > MAX_MESSAGE_BYTES:
                self.send(
                    _error(InvalidInput(f"messages are limited to {MAX_MESSAGE_BYTES} bytes"))
                )
                continue
            try:
                message = _decode(data)
            except msgspec.DecodeError as exc:
                self.send(_error(InvalidInput(f"not JSON: {exc}")))
                continue
            await self.handle(message)

    async def handle(self, message: Any) -> None:
        sub_id = message.get("id") if isinstance(message, dict) else None
        try:
            if not isinstance(message, dict):
                raise InvalidInput("a message is a JSON object with an op", field="op")
            op = message.get("op")
            if op == "ping":
                self.send({"type": "pong", "ts": iso(self.hub.clock.now_us())})
            elif op == "subscribe":
                await self._subscribe(message, self._new_id(sub_id))
            elif op == "tail":
                self._tail(message, self._new_id(sub_id))
            elif op == "unsubscribe":
                self._unsubscribe(sub_id)
            else:
                raise InvalidInput("op must be subscribe, unsubscribe, tail or ping", field="op")
        except HypemeterError as exc:
            self.send(_error(exc, sub_id))
        except Exception:
            log.exception("live message failed", extra={"op": str(message)[:200]})
            self.send(_error(HypemeterError("internal error; the connection stays open"), sub_id))

    def _new_id(self, sub_id: Any) -> str:
        if not isinstance(sub_id, str) or not 0 < len(sub_id) <= 128:
            raise InvalidInput("id must be a string of 1 to 128 characters", field="id")
        if sub_id in self.subs or sub_id in self.tails:
            raise InvalidInput(f"id {sub_id!r} is already in use on this connection", field="id")
        limit = self.hub.config.max_subscriptions
        if len(self.subs) + len(self.tails) >= limit:
            raise RateLimited(
                f"at most {limit} subscriptions and tails per connection",
                retry_after=1,
                limit=limit,
                reset_after=0,
            )
        return sub_id

    async def _subscribe(self, message: dict[str, Any], sub_id: str) -> None:
        key = _key(self.caller, message, self.hub)
        channel = await self.hub.channel(key)
        if self.done.is_set() or sub_id in self.subs:
            return
        sub = _Sub(self, sub_id, channel)
        self.subs[sub_id] = sub
        self.hub.attach(channel, sub)
        sub.deliver("snapshot", channel.snapshot(), channel.seq)

    def _tail(self, message: dict[str, Any], sub_id: str) -> None:
        live_filter = parse_filter(message.get("filter"))
        self.caller.check(live_filter, None)
        self.tails[sub_id] = self.hub.tap(self.caller.tenant_id, live_filter, _Tail(self, sub_id))
        self.send({"type": "tailing", "id": sub_id, "filter": live_filter.payload()})

    def _unsubscribe(self, sub_id: Any) -> None:
        sub = self.subs.pop(sub_id, None) if isinstance(sub_id, str) else None
        tail = self.tails.pop(sub_id, None) if isinstance(sub_id, str) else None
        if sub is not None:
            self.hub.detach(sub.channel, sub)
        elif tail is not None:
            self.hub.untap(self.caller.tenant_id, tail)
        else:
            raise InvalidInput(f"no subscription {sub_id!r} on this connection", field="id")
        self.send({"type": "unsubscribed", "id": sub_id})

    def release(self) -> None:
        for sub in self.subs.values():
            self.hub.detach(sub.channel, sub)
        for tail in self.tails.values():
            self.hub.untap(self.caller.tenant_id, tail)
        self.subs.clear()
        self.tails.clear()


@contextlib.contextmanager
def _counted(hub: LiveHub, caller: Caller) -> Any:
    """Count a live connection against its key's limit."""
    key_id = caller.token.key_id if caller.token is not None else caller.key_id
    limit = hub.config.max_connections
    if hub.connections.get(key_id, 0) >= limit:
        raise RateLimited(
            f"at most {limit} live connections per key", retry_after=5, limit=limit, reset_after=5
        )
    hub.connections[key_id] = hub.connections.get(key_id, 0) + 1
    try:
        yield
    finally:
        left = hub.connections[key_id] - 1
        if left:
            hub.connections[key_id] = left
        else:
            del hub.connections[key_id]


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """Subscribe, unsubscribe, tail and ping over one WebSocket; see docs/live.md."""
    hub, _ = _live(websocket.app)
    await websocket.accept()
    secret = _ws_secret(websocket)
    try:
        caller = await authenticate(websocket.app, secret)
        with _counted(hub, caller):
            await _serve(websocket, hub, caller)
    except HypemeterError as exc:
        with contextlib.suppress(Exception):
            await websocket.send_text(_encode({**_error(exc), "seq": 0}).decode())
            await websocket.close(CLOSE_POLICY, exc.message[:120])


def _ws_secret(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return websocket.query_params.get("token")


async def _serve(websocket: WebSocket, hub: LiveHub, caller: Caller) -> None:
    connection = Connection(websocket, hub, caller)
    closer: Callable[[], None] = lambda: connection.close(CLOSE_POLICY, "stream token revoked")  # noqa: E731
    if caller.token is not None:
        caller.token.closers.add(closer)
    connection.sent_at = time.monotonic()
    tasks = [
        asyncio.create_task(connection.writer()),
        asyncio.create_task(connection.reader()),
        asyncio.create_task(connection.heartbeat()),
    ]
    try:
        await connection.done.wait()
    finally:
        if caller.token is not None:
            caller.token.closers.discard(closer)
        connection.release()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        if websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    websocket.close(connection.close_code, connection.close_reason), 1.0
                )


# -- SSE -------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _SseLink:
    limit: int
    outbox: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def deliver(self, kind: str, body: dict[str, Any], seq: int) -> None:
        if self.closed:
            return
        if len(self.outbox) >= self.limit:
            # Behind: end the stream; the client resumes from its Last-Event-ID.
            self.closed = True
            self.outbox.clear()
        else:
            self.outbox.append(
                b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind.encode(), _encode(body))
            )
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


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
    hub, _ = _live(request.app)
    caller = await authenticate(request.app, bearer_secret(request) or token)
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
    key = _key(caller, message, hub)
    counting = _counted(hub, caller)
    counting.__enter__()
    try:
        channel = await hub.channel(key)
    except BaseException:
        counting.__exit__(None, None, None)
        raise
    link = _SseLink(hub.config.queue_messages)
    last = _last_event_id(request)
    missed = None if last is None else channel.missed_since(last)
    if missed is None:
        link.deliver("snapshot", channel.snapshot(), channel.seq)
    for seq, body in missed or ():
        link.deliver("update", body, seq)
    hub.attach(channel, link)
    if caller.token is not None:
        caller.token.closers.add(link.close)

    return StreamingResponse(
        _sse_events(hub, channel, link, caller, counting),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse_events(
    hub: LiveHub,
    channel: Channel,
    link: _SseLink,
    caller: Caller,
    counting: contextlib.AbstractContextManager[Any],
) -> AsyncIterator[bytes]:
    try:
        while True:
            if not link.outbox:
                if link.closed:
                    return
                link.wake.clear()
                try:
                    await asyncio.wait_for(link.wake.wait(), hub.config.heartbeat_s)
                except TimeoutError:
                    yield b": heartbeat\n\n"
                continue
            yield link.outbox.popleft()
    finally:
        hub.detach(channel, link)
        if caller.token is not None:
            caller.token.closers.discard(link.close)
        counting.__exit__(None, None, None)


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw.strip())


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
    grain = parse_grain(body.granularity)
    now = hub.clock.now_us()
    secret, token = await tokens.issue(
        tenant_id=principal.tenant_id,
        key_id=principal.key_id,
        live_filter=live_filter,
        metrics=names,
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
        **error_responses(401, 403, 404, 422),
    },
)
async def revoke_stream_token(
    request: Request, subscription_id: str, principal: Reader
) -> Response:
    _, tokens = _live(request.app)
    token, closed = await tokens.revoke(principal.tenant_id, subscription_id)
    return json_response(
        request, {"subscription_id": token.subscription_id, "closed_streams": closed}
    )
