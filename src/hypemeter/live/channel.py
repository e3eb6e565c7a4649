"""A live channel: one (tenant, filter, metrics, granularity, since) that any number of
subscribers share, with the totals it keeps, the updates it coalesces and numbers,
and the updates it keeps for resuming.

A channel starts from a snapshot taken in a store view pinned at one commit, then
applies the change sets of later commits only, so its totals equal a query over the
same events. Its host (the hub) takes snapshots and times the updates.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from hypemeter.clock import Clock
from hypemeter.errors import HypemeterError, RateLimited
from hypemeter.live.config import LiveConfig
from hypemeter.live.model import LiveFilter, iso
from hypemeter.metrics.model import Frame, Grain, floor_to, metric_value
from hypemeter.metrics.model import plain_number as plain
from hypemeter.metrics.service import LiveState


@dataclass(frozen=True, slots=True)
class ChannelKey:
    tenant_id: str
    filter: LiveFilter
    metrics: str
    grain: Grain
    since_us: int


class Link(Protocol):
    """One subscriber of a channel (a WebSocket subscription, an SSE stream)."""

    def deliver(self, kind: str, body: dict[str, Any], seq: int) -> None:
        """Queue a message without waiting; a full queue is the link's own business."""


class ChannelHost(Protocol):
    """What a channel asks of the hub that holds it."""

    @property
    def clock(self) -> Clock: ...

    @property
    def config(self) -> LiveConfig: ...

    def refresh(self, channel: Channel) -> None:
        """Take the channel's snapshot again, then update."""

    def schedule(self, channel: Channel) -> None:
        """Emit an update now or once the coalescing interval has passed."""


@dataclass(slots=True)
class Replay:
    """A channel's updates kept for ``window_s`` seconds (at most ``limit`` of them),
    so that a client reconnecting with the last seq it saw gets what it missed."""

    window_s: float
    limit: int
    ring: deque[tuple[int, dict[str, Any], float]] = field(default_factory=deque)

    def keep(self, seq: int, body: dict[str, Any], now: float) -> None:
        ring = self.ring
        ring.append((seq, body, now))
        horizon = now - self.window_s
        while ring and (ring[0][2] < horizon or len(ring) > self.limit):
            ring.popleft()

    def missed_since(self, last_seq: int, seq: int) -> list[tuple[int, dict[str, Any]]] | None:
        """Updates after ``last_seq`` up to ``seq`` in order, or None when they are not
        all kept (too old, lost in a gap, or a seq this channel never sent)."""
        if last_seq == seq:
            return []
        if not self.ring or last_seq > seq or self.ring[0][0] > last_seq + 1:
            return None
        return [(kept, body) for kept, body, _ in self.ring if kept > last_seq]

    def clear(self) -> None:
        self.ring.clear()


@dataclass(eq=False, slots=True)
class Channel:
    key: ChannelKey
    hub: ChannelHost
    seq: int
    replay: Replay
    links: set[Link] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: HypemeterError | None = None
    state: LiveState | None = None
    store_seq: int = 0
    pending: list[tuple[list[dict[str, Any]], int, int]] = field(default_factory=list)
    bucket_start: int = 0
    deltas: dict[int, dict[str, float]] = field(default_factory=dict)
    dirty: bool = False
    last_emit: float = float("-inf")
    timer: asyncio.TimerHandle | None = None
    committed_us: int = 0
    idle_since: float | None = None
    refreshing: bool = False  # a fresh snapshot is being taken; changes wait in pending
    stale: bool = False
    again: bool = False  # a reading came while refreshing: refresh once more
    watch: Watch | None = None  # follower readings of a campaign's members
    watched: frozenset[str] = frozenset()

    # -- state ------------------------------------------------------------------------

    def start(self, state: LiveState, store_seq: int, bucket_start: int) -> None:
        self.state, self.store_seq, self.bucket_start = state, store_seq, bucket_start
        self.refreshing = False
        pending, self.pending = self.pending, []
        for rows, seq, committed_us in pending:
            self.take(rows, seq, committed_us)

    def take(self, rows: list[dict[str, Any]], seq: int, committed_us: int) -> None:
        """Apply the rows of one commit that this channel's primary field matched."""
        if self.state is None or self.refreshing:
            self.pending.append((rows, seq, committed_us))
            return
        if seq <= self.store_seq:
            return  # already in the snapshot
        self._roll()
        touched = False
        gauges = self.state.plan.gauges
        for row in rows:
            if not self.key.filter.matches(row):
                continue
            if row["ts"] >= self.key.since_us:
                touched = self._apply(row) or touched
            elif row["metric"] in gauges:  # a reading before the range moves its start
                self.stale = touched = True
        if touched:
            self.dirty = True
            self.committed_us = max(self.committed_us, committed_us)
            if self.stale:
                self.stale = False
                self.hub.refresh(self)
            else:
                self.hub.schedule(self)

    def _apply(self, row: dict[str, Any]) -> bool:
        assert self.state is not None
        state, metric = self.state, row["metric"]
        plan = state.plan
        counted = metric in plan.counters
        if not counted and metric not in plan.gauges:
            return False
        delta = float(row["delta"])
        bucket = row["ts"] - row["ts"] % self.key.grain.us
        current = state.bucket if bucket == self.bucket_start else None
        if counted:
            members = state.members
            if members is not None and plan.gauges and row["influencer_id"] not in members:
                self.stale = True  # a new member brings its followers into the range
            state.totals.add(row["platform"], metric, delta)
            if current is not None:
                current.add(row["platform"], metric, delta)
        else:
            # Followers at the range's start, per account, may move with any reading
            # (a first one, a late one): the channel takes a fresh snapshot.
            self.stale = True
        if metric in plan.names:
            slot = self.deltas.setdefault(bucket, {})
            slot[metric] = slot.get(metric, 0.0) + delta
        return True

    def _roll(self) -> None:
        """Start a new current bucket once the clock has moved into it."""
        assert self.state is not None
        start = floor_to(self.hub.clock.now_us(), self.key.grain.us)
        if start > self.bucket_start:
            totals = self.state.totals
            fresh = Frame(base=dict(totals.base))
            fresh.gauges = dict(totals.gauges)  # the last reading carries on
            fresh.growth = {m: 0.0 for m, v in totals.gauges.items() if v is not None}
            self.state.bucket, self.bucket_start = fresh, start

    def values(self, frame: Frame) -> dict[str, Any]:
        assert self.state is not None
        state = self.state
        return {
            name: plain(metric_value(name, frame, state.catalog, state.rates))
            for name in state.plan.names
        }

    def snapshot(self) -> dict[str, Any]:
        assert self.state is not None
        self._roll()
        return {
            "filter": self.key.filter.payload(),
            "metrics": list(self.state.plan.names),
            "granularity": self.key.grain.value,
            "since": iso(self.key.since_us),
            "bucket": {"ts": iso(self.bucket_start), **self.values(self.state.bucket)},
            "totals": self.values(self.state.totals),
        }

    def emit(self) -> None:
        self.timer = None
        if not self.dirty or self.state is None:
            return
        self._roll()
        self.seq += 1
        body = {
            "totals": self.values(self.state.totals),
            "bucket": {"ts": iso(self.bucket_start), **self.values(self.state.bucket)},
            "deltas": [
                {"ts": iso(b), **{m: plain(v) for m, v in d.items()}}
                for b, d in sorted(self.deltas.items())
            ],
            "committed_at": iso(self.committed_us),
        }
        self.deltas = {}
        self.dirty = False
        now = time.monotonic()
        self.last_emit = now
        self.replay.keep(self.seq, body, now)
        for link in list(self.links):
            link.deliver("update", body, self.seq)

    def missed_since(self, last_seq: int) -> list[tuple[int, dict[str, Any]]] | None:
        """Updates after ``last_seq`` in order, or None when they are not all kept."""
        return self.replay.missed_since(last_seq, self.seq)


@dataclass(eq=False, slots=True)
class Watch:
    """Routed by influencer: follower readings of a campaign channel's members, which
    carry no campaign and so do not reach the channel by its own route."""

    channel: Channel

    def take(self, rows: list[dict[str, Any]], seq: int, committed_us: int) -> None:
        channel = self.channel
        state = channel.state
        if state is None or not any(row["metric"] in state.plan.gauges for row in rows):
            return
        if channel.refreshing:
            channel.again = True
        elif seq > channel.store_seq:
            channel.dirty = True
            channel.committed_us = max(channel.committed_us, committed_us)
            channel.hub.refresh(channel)


class ChannelTable:
    """The channels of a process by key, counted per tenant: a tenant may hold at most
    ``max_per_tenant`` (every channel costs a snapshot query and memory)."""

    def __init__(self, max_per_tenant: int) -> None:
        self.max_per_tenant = max_per_tenant
        self._channels: dict[ChannelKey, Channel] = {}
        self._per_tenant: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._channels)

    def get(self, key: ChannelKey) -> Channel | None:
        return self._channels.get(key)

    def add(self, channel: Channel) -> None:
        tenant_id = channel.key.tenant_id
        self._channels[channel.key] = channel
        self._per_tenant[tenant_id] = self._per_tenant.get(tenant_id, 0) + 1

    def remove(self, channel: Channel) -> None:
        """Forget the channel if it is the one held under its key."""
        tenant_id = channel.key.tenant_id
        if self._channels.get(channel.key) is channel:
            del self._channels[channel.key]
            left = self._per_tenant.get(tenant_id, 1) - 1
            if left > 0:
                self._per_tenant[tenant_id] = left
            else:
                self._per_tenant.pop(tenant_id, None)

    def count(self, tenant_id: str) -> int:
        return self._per_tenant.get(tenant_id, 0)

    def full(self, tenant_id: str) -> bool:
        return self.count(tenant_id) >= self.max_per_tenant

    def of_tenant(self, tenant_id: str) -> list[Channel]:
        return [c for c in self._channels.values() if c.key.tenant_id == tenant_id]

    def idle(self, *, tenant_id: str | None = None, since: float | None = None) -> list[Channel]:
        """Channels nobody listens to (of one tenant; idle since ``since`` or earlier)."""
        return [
            channel
            for channel in self._channels.values()
            if not channel.links
            and channel.idle_since is not None
            and (since is None or channel.idle_since <= since)
            and (tenant_id is None or channel.key.tenant_id == tenant_id)
        ]

    def require_room(self, tenant_id: str) -> None:
        """Raise RateLimited when the tenant holds its fill of channels."""
        if self.full(tenant_id):
            limit = self.max_per_tenant
            raise RateLimited(
                f"at most {limit} live channels per tenant (live_max_channels_per_tenant): "
                "subscribe to the same filter, metrics, granularity and since as others do",
                retry_after=5,
                limit=limit,
                reset_after=5,
            )

    def clear(self) -> None:
        self._channels.clear()
        self._per_tenant.clear()
