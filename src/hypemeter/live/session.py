"""A live session of a client that sends ops (``subscribe``, ``unsubscribe``, ``tail``,
``ping``) over one connection, whatever carries it.

The transport hands the session each message the client sent (``receive``) and
writes what the session queues in its ``outbox``; it asks for heartbeats
(``heartbeat``) and closes the connection with the session's close code once the
outbox is ``done``.

Every message a client sends counts against the session's rate (``live_ops_rate``);
one over it is answered with a ``rate_limited`` error, and a client that goes on
sending ``live_max_refused_ops`` refused messages in a row is closed with 1008. A
session holds at most ``live_max_subscriptions`` subscriptions and tails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from hypemeter.errors import HypemeterError, InvalidInput, RateLimited
from hypemeter.live.access import Caller, Catalog, channel_key
from hypemeter.live.channel import Channel, ChannelKey, Link
from hypemeter.live.model import LiveFilter, Strikes, iso, parse_filter
from hypemeter.live.outbox import CLOSE_POLICY, Outbox
from hypemeter.live.routing import TailTarget, Tap
from hypemeter.live.throttle import Throttle

log = logging.getLogger("hypemeter.live")
MAX_MESSAGE_BYTES = 64 * 1024
FLOODING_REASON = "too many messages; the connection kept flooding"

_decode = msgspec.json.Decoder().decode


class LiveChannels(Catalog, Protocol):
    """What a session asks of the hub."""

    async def channel(self, key: ChannelKey) -> Channel: ...

    def attach(self, channel: Channel, link: Link) -> None: ...

    def detach(self, channel: Channel, link: Link) -> None: ...

    def tap(
        self,
        tenant_id: str,
        live_filter: LiveFilter,
        tap: Tap,
        *,
        metrics: frozenset[str] | None = None,
    ) -> TailTarget: ...

    def untap(self, tenant_id: str, target: TailTarget) -> None: ...


def error_message(exc: HypemeterError, sub_id: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
    if sub_id is not None:
        body["id"] = sub_id
    if exc.field is not None:
        body["field"] = exc.field
    return body


@dataclass(eq=False, slots=True)
class _Sub:
    """One subscription of a session: a link of its channel."""

    session: Session
    sub_id: str
    channel: Channel

    def deliver(self, kind: str, body: dict[str, Any], seq: int) -> None:
        self.session.send({"type": kind, "id": self.sub_id, **body})


@dataclass(eq=False, slots=True)
class _Tail:
    session: Session
    sub_id: str

    def events(self, rows: list[dict[str, Any]]) -> None:
        # One message per commit: a large commit is one message, not a burst.
        self.session.send({"type": "event", "id": self.sub_id, "events": rows})


@dataclass(eq=False, slots=True)
class Session:
    """One client's subscriptions and tails, and the outbox its transport drains."""

    hub: LiveChannels
    caller: Caller
    strikes: Strikes
    ops: Throttle  # the messages the client sends
    outbox: Outbox
    subs: dict[str, _Sub] = field(default_factory=dict)
    tails: dict[str, TailTarget] = field(default_factory=dict)
    sent_at: float = 0.0  # when the transport last wrote a message (monotonic seconds)

    @classmethod
    def open(cls, hub: LiveChannels, caller: Caller, ops: Throttle, *, now: float) -> Session:
        config = hub.config
        return cls(
            hub,
            caller,
            Strikes(config.max_refused_ops),
            ops,
            Outbox(config.queue_messages, config.max_lags),
            sent_at=now,
        )

    @property
    def done(self) -> bool:
        return self.outbox.done.is_set()

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message with the next ``seq``; never waits."""
        outbox = self.outbox
        if outbox.done.is_set():
            return
        if not outbox.put(message):
            self._lag()

    def _lag(self) -> None:
        """The client fell behind: drop what it has not read, say so, start it afresh."""
        dropped = self.outbox.overflow()
        if dropped is None:
            return
        self.send({"type": "lagged", "dropped": dropped})
        for sub in self.subs.values():
            sub.deliver("snapshot", sub.channel.snapshot(), sub.channel.seq)

    def close(self, code: int, reason: str) -> None:
        self.outbox.close(code, reason)

    def revoke(self, reason: str) -> None:
        """Its key or stream token was revoked: close with a policy violation."""
        self.close(CLOSE_POLICY, reason)

    def written(self, now: float) -> None:
        """The transport wrote a message to the client."""
        self.sent_at = now
        self.outbox.written()

    def heartbeat(self, now: float) -> float:
        """Seconds until a heartbeat is due, or 0 once it was handled: queued after a
        quiet ``heartbeat_s`` (unless messages wait: the writer is waiting on the client),
        and a new quiet spell starts."""
        wait = self.sent_at + self.hub.config.heartbeat_s - now
        if wait > 0:
            return wait
        if not self.outbox.messages:
            self.send({"type": "heartbeat", "ts": iso(self.hub.clock.now_us())})
        self.sent_at = now
        return 0.0

    async def receive(self, data: str | bytes) -> None:
        """Handle one message the client sent, once it is within the session's rate."""
        if not await self._admit():
            return
        if len(data) > MAX_MESSAGE_BYTES:
            self.send(
                error_message(InvalidInput(f"messages are limited to {MAX_MESSAGE_BYTES} bytes"))
            )
            return
        try:
            message = _decode(data)
        except msgspec.DecodeError as exc:
            self.send(error_message(InvalidInput(f"not JSON: {exc}")))
            return
        await self.handle(message)

    async def _admit(self) -> bool:
        """Count a message against the session's rate; whether to handle it."""
        try:
            await self.ops.take("messages")
        except RateLimited as exc:
            if self.strikes.refused():
                self.close(CLOSE_POLICY, FLOODING_REASON)
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
        if self.done or sub_id in self.subs:
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
        """The session ended: leave every channel and tail."""
        for sub in self.subs.values():
            self.hub.detach(sub.channel, sub)
        for tail in self.tails.values():
            self.hub.untap(self.caller.tenant_id, tail)
        self.subs.clear()
        self.tails.clear()
