"""What a live client has yet to read, and what happens when it falls behind.

Delivery never waits on a client: messages go into its bounded outbox, and the
transport's writer drains it at the client's pace. A client that lets its outbox
fill up lags: what it has not read is dropped, and it starts afresh, or, after
``max_lags`` lags without catching up in between, it is closed (1013, try again
later). A one-way stream, which cannot be told it lagged, ends instead and the
client resumes from the last seq it saw.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import msgspec

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # a policy violation: revoked access, flooding
CLOSE_LAGGING = 1013  # try again later
LAGGING_REASON = "the client kept falling behind; reconnect"

_encode = msgspec.json.Encoder().encode


@dataclass(eq=False, slots=True)
class Outbox:
    """The JSON messages queued for one client of a session, numbered by ``seq``, at
    most ``limit`` of them; and how the session ends (``done``, with a close code)."""

    limit: int
    max_lags: int
    messages: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    seq: int = 0
    lags: int = 0  # lags since the client last caught up
    close_code: int = CLOSE_NORMAL
    close_reason: str = ""

    def put(self, message: dict[str, Any]) -> bool:
        """Queue a message with the next ``seq`` (added to it); False when full."""
        if len(self.messages) >= self.limit:
            return False
        self.seq += 1
        message["seq"] = self.seq
        self.messages.append(_encode(message).decode())
        self.wake.set()
        return True

    def overflow(self) -> int | None:
        """The client fell behind: drop what it has not read. How many were dropped, or
        None when that makes ``max_lags`` lags without catching up: then it is closed."""
        dropped = len(self.messages)
        self.messages.clear()
        self.lags += 1
        if self.lags >= self.max_lags:
            self.close(CLOSE_LAGGING, LAGGING_REASON)
            return None
        return dropped

    def take(self) -> str | None:
        """The next message for the writer, if any."""
        return self.messages.popleft() if self.messages else None

    def written(self) -> None:
        """The writer sent a message; with nothing left queued the client caught up."""
        if not self.messages:
            self.lags = 0

    def close(self, code: int, reason: str) -> None:
        """End the session with ``code``; the first close wins."""
        if self.done.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self.done.set()
        self.wake.set()

    def end(self) -> None:
        """The client left."""
        self.done.set()


@dataclass(frozen=True, slots=True)
class Frame:
    """One message of a one-way stream: its seq, kind and JSON body."""

    seq: int
    kind: str
    data: bytes


@dataclass(eq=False, slots=True)
class StreamOutbox:
    """The frames queued for one one-way stream, at most ``limit``. A full one ends the
    stream (the client resumes from the last seq it got); a revocation ends it with an
    ``error`` frame under the last seq sent, so that it moves no client's resume point."""

    limit: int
    frames: deque[Frame] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    last_seq: int = 0

    def deliver(self, kind: str, body: dict[str, Any], seq: int) -> None:
        if self.closed:
            return
        if len(self.frames) >= self.limit:
            self.closed = True
            self.frames.clear()
        else:
            self.frames.append(Frame(seq, kind, _encode(body)))
            self.last_seq = seq
        self.wake.set()

    def revoke(self, reason: str) -> None:
        """Its key or stream token was revoked: end with an error that says so."""
        if self.closed:
            return
        error = {"code": "unauthenticated", "message": reason}
        self.frames.append(Frame(self.last_seq, "error", _encode(error)))
        self.closed = True
        self.wake.set()

    async def drain(self, heartbeat_s: float) -> AsyncGenerator[Frame | None, None]:
        """The frames in order, and None (a heartbeat) after each quiet ``heartbeat_s``;
        ends once closed and drained."""
        while True:
            if not self.frames:
                if self.closed:
                    return
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), heartbeat_s)
                except TimeoutError:
                    yield None
                continue
            yield self.frames.popleft()
