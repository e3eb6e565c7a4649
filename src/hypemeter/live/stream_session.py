"""A one-way live session: one subscription whose updates flow to the client, which
resumes after a break from the last seq it saw, whatever carries it.

Opening checks what the caller asks for, registers the stream with the open
streams (so that revoking its key or token ends it) and takes the channel; the
first messages are the updates the client missed, when all of them are kept,
else a fresh snapshot. The transport then writes the session's frames
(``frames``) and a heartbeat after each quiet ``heartbeat_s``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

from hypemeter.live.access import Caller, channel_key
from hypemeter.live.channel import Channel
from hypemeter.live.outbox import Frame, StreamOutbox
from hypemeter.live.session import LiveChannels
from hypemeter.live.streams import OpenStream, OpenStreams


class Resumable(Protocol):
    """A channel as resuming reads it."""

    @property
    def seq(self) -> int: ...

    def missed_since(self, last_seq: int) -> list[tuple[int, dict[str, Any]]] | None: ...

    def snapshot(self) -> dict[str, Any]: ...


def parse_last_seq(raw: str | None) -> int | None:
    """The last seq a reconnecting client says it saw; None (start afresh) unless it is
    plain digits."""
    if raw is None:
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


def resume(channel: Resumable, last_seq: int | None) -> list[tuple[str, dict[str, Any], int]]:
    """What a stream sends first, as (kind, body, seq): the updates after ``last_seq``
    when the channel kept them all, else a snapshot of the channel now."""
    missed = None if last_seq is None else channel.missed_since(last_seq)
    if missed is None:
        return [("snapshot", channel.snapshot(), channel.seq)]
    return [("update", body, seq) for seq, body in missed]


@dataclass(eq=False, slots=True)
class StreamSession:
    hub: LiveChannels
    channel: Channel
    outbox: StreamOutbox
    streams: OpenStreams
    stream: OpenStream

    @classmethod
    async def open(
        cls,
        hub: LiveChannels,
        streams: OpenStreams,
        caller: Caller,
        message: dict[str, Any],
        *,
        last_seq: int | None,
    ) -> StreamSession:
        """Raises what checking the subscription raises (InvalidInput, Forbidden), then
        RateLimited (the key has all its live streams open, or the tenant its channels)
        or what taking the channel's snapshot raised."""
        key = channel_key(caller, message, hub)
        outbox = StreamOutbox(hub.config.queue_messages)
        stream = streams.open(caller.key_id, caller.subscription_id, outbox.revoke)
        try:
            channel = await hub.channel(key)
        except BaseException:
            streams.release(stream)
            raise
        for kind, body, seq in resume(channel, last_seq):
            outbox.deliver(kind, body, seq)
        hub.attach(channel, outbox)
        return cls(hub, channel, outbox, streams, stream)

    async def frames(self) -> AsyncGenerator[Frame | None, None]:
        """The frames to write, None for a heartbeat; leaves the channel when it ends."""
        try:
            async with contextlib.aclosing(self.outbox.drain(self.hub.config.heartbeat_s)) as drain:
                async for frame in drain:
                    yield frame
        finally:
            self.hub.detach(self.channel, self.outbox)
            self.streams.release(self.stream)
