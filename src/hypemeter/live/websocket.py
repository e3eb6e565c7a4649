"""One WebSocket of ``/v1/stream``: its ops, subscriptions and tails, and its writer.

Every message a client sends counts against the connection's rate
(``live_ops_rate``); one over it is answered with a ``rate_limited`` error, and a
client that goes on sending ``live_max_refused_ops`` refused messages in a row is
closed with 1008. The connection is registered with the process's open streams, so
that revoking its key (or its stream token) closes it with 1008 and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hypemeter.errors import HypemeterError, InvalidInput, RateLimited
from hypemeter.live.access import Caller, channel_key
from hypemeter.live.hub import Channel, LiveHub, TailTarget
from hypemeter.live.model import Strikes, iso, parse_filter
from hypemeter.live.streams import OpenStreams
from hypemeter.live.throttle import Throttle

log = logging.getLogger("hypemeter.live")
MAX_MESSAGE_BYTES = 64 * 1024
CLOSE_LAGGING = 1013  # try again later
CLOSE_POLICY = 1008

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def error_message(exc: HypemeterError, sub_id: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
    if sub_id is not None:
        body["id"] = sub_id
    if exc.field is not None:
        body["field"] = exc.field
    return body


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
    strikes: Strikes
    ops: Throttle  # the messages the client sends
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
        if self.done.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self.done.set()
        self.wake.set()

    def revoke(self, reason: str) -> None:
        """Its key or stream token was revoked: close with a policy violation."""
        self.close(CLOSE_POLICY, reason)

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
            if not await self._admit():
                continue
            data = raw.get("text") or raw.get("bytes") or b""
            if len(data) > MAX_MESSAGE_BYTES:
                self.send(
                    error_message(
                        InvalidInput(f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
                    )
                )
                continue
            try:
                message = _decode(data)
            except msgspec.DecodeError as exc:
                self.send(error_message(InvalidInput(f"not JSON: {exc}")))
                continue
            await self.handle(message)

    async def _admit(self) -> bool:
        """Count a message against the connection's rate; whether to handle it."""
        try:
            await self.ops.take("messages")
        except RateLimited as exc:
            if self.strikes.refused():
                self.close(CLOSE_POLICY, "too many messages; the connection kept flooding")
            else:
                self.send(error_message(exc))
            return False
        self.strikes.allowed()
        return True

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
            self.send(error_message(exc, sub_id))
        except Exception:
            log.exception("live message failed", extra={"op": str(message)[:200]})
            self.send(
                error_message(HypemeterError("internal error; the connection stays open"), sub_id)
            )

    def _new_id(self, sub_id: Any) -> str:
        if not isinstance(sub_id, str) or not 0 < len(sub_id) <= 128:
            raise InvalidInput("id must be a string of 1 to 128 characters", field="id")
        if sub_id in self.subs or sub_id in self.tails:
            raise InvalidInput(f"id {sub_id!r} is already in use on this connection", field="id")
        limit = self.hub.config.max_subscriptions
        if len(self.subs) + len(self.tails) >= limit:
            raise RateLimited(
                f"at most {limit} subscriptions and tails per connection (live_max_subscriptions)",
                retry_after=1,
                limit=limit,
                reset_after=0,
            )
        return sub_id

    async def _subscribe(self, message: dict[str, Any], sub_id: str) -> None:
        key = channel_key(self.caller, message, self.hub)
        channel = await self.hub.channel(key)
        if self.done.is_set() or sub_id in self.subs:
            return
        sub = _Sub(self, sub_id, channel)
        self.subs[sub_id] = sub
        self.hub.attach(channel, sub)
        sub.deliver("snapshot", channel.snapshot(), channel.seq)

    def _tail(self, message: dict[str, Any], sub_id: str) -> None:
        live_filter = parse_filter(message.get("filter"))
        self.caller.check(live_filter, None, tail=True)
        self.tails[sub_id] = self.hub.tap(
            self.caller.tenant_id,
            live_filter,
            _Tail(self, sub_id),
            metrics=self.caller.tail_metrics(),
        )
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


async def serve(websocket: WebSocket, hub: LiveHub, streams: OpenStreams, caller: Caller) -> None:
    """Run an accepted, authenticated WebSocket until either side ends it; raises
    RateLimited (before anything runs) when its key has all its live connections open."""
    connection = Connection(
        websocket, hub, caller, Strikes(hub.config.max_refused_ops), hub.ops.another()
    )
    stream = streams.open(caller.key_id, caller.subscription_id, connection.revoke)
    connection.sent_at = time.monotonic()
    tasks = [
        asyncio.create_task(connection.writer()),
        asyncio.create_task(connection.reader()),
        asyncio.create_task(connection.heartbeat()),
    ]
    try:
        await connection.done.wait()
    finally:
        streams.release(stream)
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
