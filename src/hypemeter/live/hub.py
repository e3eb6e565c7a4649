"""The live hub: channels of live totals fed by the change sets of every commit.

A channel is one (tenant, filter, metrics, granularity, since) that any number
of subscribers share. It starts from a snapshot taken in a store view pinned
at one commit, then applies the change sets of later commits only, so its
totals equal a query over the same events. Updates are coalesced per channel
(at most one per ``coalesce_s``), numbered, and kept for ``replay_s`` so that
an SSE client reconnecting with ``Last-Event-ID`` gets what it missed.

Delivery to a subscriber never waits: each ``Link`` puts into its own bounded
outbox and deals with a full one itself (lagged, or closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.changes.codec import ChangeSet
from hypemeter.changes.feed import ChangeFeed, ChangeSubscription
from hypemeter.clock import Clock
from hypemeter.errors import HypemeterError, InvalidInput, RateLimited, StoreUnavailable
from hypemeter.live.model import WHOLE_TENANT, LiveFilter, iso
from hypemeter.live.throttle import Throttle
from hypemeter.metrics.model import DAY_US, Frame, Grain, TimeRange, floor_to, metric_value
from hypemeter.metrics.model import plain_number as plain
from hypemeter.metrics.ports import MetricsStore
from hypemeter.metrics.service import LiveState, MetricsService

log = logging.getLogger("hypemeter.live")

BUS_BACKLOG = 10_000  # change sets a tenant's feed may fall behind by before resyncing
SWEEP_S = 5.0
ROW_FIELDS = ("influencer_id", "platform", "content_id", "campaign_id", "metric", "kind")


@dataclass(frozen=True, slots=True)
class LiveConfig:
    coalesce_s: float = 0.1
    replay_s: float = 300.0
    queue_messages: int = 256
    max_lags: int = 3
    heartbeat_s: float = 15.0
    max_subscriptions: int = 100
    token_s: int = 3600
    max_channels_per_tenant: int = 1000
    retention_days: int = 400  # how far back ``since`` may reach
    ops_rate: str = "50/second"  # messages a WebSocket client may send
    max_refused_ops: int = 20  # refused in a row before the connection is closed


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


class Tap(Protocol):
    """Raw events of one influencer or content item (moderation views)."""

    def events(self, rows: list[dict[str, Any]]) -> None: ...


class Target(Protocol):
    def take(self, rows: list[dict[str, Any]], seq: int, committed_us: int) -> None: ...


@dataclass(eq=False, slots=True)
class Channel:
    key: ChannelKey
    hub: LiveHub
    seq: int
    links: set[Link] = field(default_factory=set)
    ring: deque[tuple[int, dict[str, Any], float]] = field(default_factory=deque)  # seq, body, at
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
        self._keep(body, now)
        for link in list(self.links):
            link.deliver("update", body, self.seq)

    def _keep(self, body: dict[str, Any], now: float) -> None:
        self.ring.append((self.seq, body, now))
        horizon = now - self.hub.config.replay_s
        limit = max(16, int(self.hub.config.replay_s / max(self.hub.config.coalesce_s, 0.01)))
        while self.ring and (self.ring[0][2] < horizon or len(self.ring) > limit):
            self.ring.popleft()

    def missed_since(self, last_seq: int) -> list[tuple[int, dict[str, Any]]] | None:
        """Updates after ``last_seq`` in order, or None when they are not all kept."""
        if last_seq == self.seq:
            return []
        if not self.ring or last_seq > self.seq or self.ring[0][0] > last_seq + 1:
            return None
        return [(seq, body) for seq, body, _ in self.ring if seq > last_seq]


@dataclass(eq=False, slots=True)
class TailTarget:
    filter: LiveFilter
    tap: Tap
    metrics: frozenset[str] | None = None  # the metrics whose events it may send; None: any

    def take(self, rows: list[dict[str, Any]], seq: int, committed_us: int) -> None:
        metrics = self.metrics
        picked = [
            _event(row)
            for row in rows
            if self.filter.matches(row) and (metrics is None or row["metric"] in metrics)
        ]
        if picked:
            self.tap.events(picked)


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


def _event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": row["event_id"],
        **{name: row[name] for name in ROW_FIELDS},
        "value": plain(row["value"]),
        "delta": plain(row["delta"]),
        "ts": iso(row["ts"]),
        "user_id": row["user_id"],
        "text": row["text"],
        "tags": row["tags"] or [],
    }


@dataclass(slots=True)
class Feed:
    """A tenant's change sets, from the change feed, routed by primary field to targets."""

    subscription: ChangeSubscription
    routes: dict[str, dict[str, set[Target]]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    dropped: int = 0

    def add(self, name: str, value: str, target: Target) -> None:
        self.routes.setdefault(name, {}).setdefault(value, set()).add(target)

    def remove(self, name: str, value: str, target: Target) -> None:
        by_value = self.routes.get(name, {})
        targets = by_value.get(value)
        if targets is not None:
            targets.discard(target)
            if not targets:
                del by_value[value]
        if not by_value:
            self.routes.pop(name, None)

    def targets(self) -> Iterable[Target]:
        for by_value in self.routes.values():
            for targets in by_value.values():
                yield from targets


class LiveHub:
    """Every live channel and tap of this process."""

    def __init__(
        self,
        changes: ChangeFeed,
        store: MetricsStore,
        metrics: MetricsService,
        clock: Clock,
        config: LiveConfig,
    ) -> None:
        self._changes = changes
        self._store = store
        self._metrics = metrics
        self.clock = clock
        self.config = config
        self._channels: dict[ChannelKey, Channel] = {}
        self._feeds: dict[str, Feed] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._per_tenant: dict[str, int] = {}  # channels per tenant
        # Each WebSocket counts its messages on ``ops.another()``.
        self.ops = Throttle(config.ops_rate, what="messages", setting="live_ops_rate")

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="hypemeter-live-sweep")

    async def aclose(self) -> None:
        tasks = [f.task for f in self._feeds.values() if f.task is not None]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for feed in self._feeds.values():
            await feed.subscription.aclose()
        self._feeds.clear()
        self._channels.clear()

    # -- channels -------------------------------------------------------------------------

    async def channel(self, key: ChannelKey) -> Channel:
        """The channel of ``key``, with its snapshot taken; raises what the snapshot raised."""
        found = self._channels.get(key)
        if found is None:
            self._make_room(key.tenant_id)
            found = Channel(key, self, seq=time.time_ns() // 1000)
            self._channels[key] = found
            self._per_tenant[key.tenant_id] = self._per_tenant.get(key.tenant_id, 0) + 1
            feed = self._feed(key.tenant_id)
            feed.add(*key.filter.primary, found)
            try:
                # Every change committed after the snapshot must reach the feed.
                await feed.subscription.ready()
                await self._snapshot(found)
            except HypemeterError as exc:
                found.error = exc
                self._drop(found)
            except Exception as exc:  # a backend fault the store did not translate
                log.exception("live snapshot failed", extra={"tenant": key.tenant_id})
                found.error = StoreUnavailable(f"the live snapshot could not be read: {exc}")
                self._drop(found)
            finally:
                found.ready.set()
        else:
            await found.ready.wait()
        if found.error is not None:
            raise found.error
        return found

    def _make_room(self, tenant_id: str) -> None:
        """Let a tenant open one more channel: drop its idle ones if it has its fill,
        else raise RateLimited (every channel costs a snapshot query and memory)."""
        limit = self.config.max_channels_per_tenant
        if self._per_tenant.get(tenant_id, 0) < limit:
            return
        for channel in list(self._channels.values()):
            idle = not channel.links and channel.idle_since is not None
            if idle and channel.key.tenant_id == tenant_id:
                self._drop(channel)
        if self._per_tenant.get(tenant_id, 0) >= limit:
            raise RateLimited(
                f"at most {limit} live channels per tenant (live_max_channels_per_tenant): "
                "subscribe to the same filter, metrics, granularity and since as others do",
                retry_after=5,
                limit=limit,
                reset_after=5,
            )

    async def _snapshot(self, channel: Channel) -> None:
        key = channel.key
        now = self.clock.now_us()
        bucket_start = floor_to(now, key.grain.us)
        # Totals reach past now: an event may carry a time a little ahead of the clock.
        bucket = TimeRange(bucket_start, bucket_start + key.grain.us)
        async with self._store.pinned() as view:
            state = await self._metrics.live_state(
                key.tenant_id,
                view,
                filters=key.filter.filters(),
                metrics=key.metrics,
                since_us=key.since_us,
                until_us=max(bucket.end_us, now) + DAY_US,
                bucket=bucket,
            )
            channel.start(state, view.seq, bucket_start)
        self._watch(channel)

    def _watch(self, channel: Channel) -> None:
        """Route the follower readings of the channel's members to it."""
        feed = self._feeds.get(channel.key.tenant_id)
        members = channel.state.members if channel.state is not None else None
        wanted = frozenset(members or ()) if feed is not None else frozenset()
        if channel.watch is None:
            channel.watch = Watch(channel)
        if feed is not None:
            for gone in channel.watched - wanted:
                feed.remove("influencer_id", gone, channel.watch)
            for new in wanted - channel.watched:
                feed.add("influencer_id", new, channel.watch)
        channel.watched = wanted

    def attach(self, channel: Channel, link: Link) -> None:
        channel.links.add(link)
        channel.idle_since = None

    def detach(self, channel: Channel, link: Link) -> None:
        channel.links.discard(link)
        if not channel.links:
            channel.idle_since = time.monotonic()

    def _drop(self, channel: Channel) -> None:
        tenant_id = channel.key.tenant_id
        if self._channels.get(channel.key) is channel:
            del self._channels[channel.key]
            left = self._per_tenant.get(tenant_id, 1) - 1
            if left > 0:
                self._per_tenant[tenant_id] = left
            else:
                self._per_tenant.pop(tenant_id, None)
        if channel.timer is not None:
            channel.timer.cancel()
        feed = self._feeds.get(tenant_id)
        if feed is not None:
            feed.remove(*channel.key.filter.primary, channel)
            if channel.watch is not None:
                for member in channel.watched:
                    feed.remove("influencer_id", member, channel.watch)
            channel.watched = frozenset()
            self._maybe_close(tenant_id)

    def refresh(self, channel: Channel) -> None:
        """Take the channel's snapshot again; changes wait meanwhile, then it updates."""
        if channel.refreshing:
            return
        channel.refreshing = True
        asyncio.get_running_loop().create_task(self._refresh(channel))

    async def _refresh(self, channel: Channel) -> None:
        try:
            await self._snapshot(channel)
        except Exception:
            log.exception("live snapshot failed", extra={"tenant": channel.key.tenant_id})
            if channel.state is not None:
                channel.start(channel.state, channel.store_seq, channel.bucket_start)
        channel.dirty = True
        if channel.again:
            channel.again = False
            self.refresh(channel)
        else:
            self.schedule(channel)

    def schedule(self, channel: Channel) -> None:
        """Emit now, or once ``coalesce_s`` has passed since the channel's last update."""
        if channel.timer is not None:
            return
        wait = channel.last_emit + self.config.coalesce_s - time.monotonic()
        if wait <= 0:
            channel.emit()
        else:
            channel.timer = asyncio.get_running_loop().call_later(wait, channel.emit)

    # -- taps ---------------------------------------------------------------------------

    def tap(
        self,
        tenant_id: str,
        live_filter: LiveFilter,
        tap: Tap,
        *,
        metrics: frozenset[str] | None = None,
    ) -> TailTarget:
        """Follow the raw events of the filter (only those of ``metrics``, if given)."""
        if live_filter.content_id is None and live_filter.influencer_id is None:
            raise InvalidInput("a tail follows one influencer_id or one content_id", field="filter")
        target = TailTarget(live_filter, tap, metrics)
        name = "content_id" if live_filter.content_id is not None else "influencer_id"
        self._feed(tenant_id).add(name, getattr(live_filter, name), target)
        return target

    def untap(self, tenant_id: str, target: TailTarget) -> None:
        feed = self._feeds.get(tenant_id)
        if feed is None:
            return
        live_filter = target.filter
        name = "content_id" if live_filter.content_id is not None else "influencer_id"
        feed.remove(name, getattr(live_filter, name), target)
        self._maybe_close(tenant_id)

    # -- feeds ---------------------------------------------------------------------------

    def _feed(self, tenant_id: str) -> Feed:
        feed = self._feeds.get(tenant_id)
        if feed is None:
            subscription = self._changes.subscribe(tenant_id, max_pending=BUS_BACKLOG)
            feed = Feed(subscription)
            feed.task = asyncio.create_task(
                self._consume(tenant_id, feed), name=f"hypemeter-live-{tenant_id}"
            )
            self._feeds[tenant_id] = feed
        return feed

    def _maybe_close(self, tenant_id: str) -> None:
        feed = self._feeds.get(tenant_id)
        if feed is not None and not feed.routes:
            del self._feeds[tenant_id]
            if feed.task is not None:
                feed.task.cancel()
            asyncio.get_running_loop().create_task(feed.subscription.aclose())

    async def _consume(self, tenant_id: str, feed: Feed) -> None:
        async for change in feed.subscription:
            if change is not None:  # None marks a gap: the drop count below says so
                try:
                    self.route(feed, change)
                except Exception:
                    log.exception("live change set not applied", extra={"tenant": tenant_id})
            if feed.subscription.dropped != feed.dropped:
                feed.dropped = feed.subscription.dropped
                self._resync(tenant_id, feed)

    def route(self, feed: Feed, change: ChangeSet) -> None:
        table = change.table
        if not table.num_rows:
            return
        table = table.set_column(
            table.schema.get_field_index("ts"), "ts", pc.cast(table.column("ts"), pa.int64())
        )
        for name, by_value in list(feed.routes.items()):
            if not by_value:
                continue
            if name == WHOLE_TENANT[0]:
                rows = table.to_pylist()
                for target in list(by_value.get(WHOLE_TENANT[1], ())):
                    target.take(rows, change.seq, change.committed_us)
                continue
            column = table.column(name)
            hit = pc.fill_null(
                pc.is_in(column, value_set=pa.array(list(by_value), pa.string())), False
            )
            picked = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
            if not len(picked):
                continue
            groups: dict[str, list[dict[str, Any]]] = {}
            for row in table.take(pa.array(picked)).to_pylist():
                groups.setdefault(row[name], []).append(row)
            for value, rows in groups.items():
                for target in list(by_value.get(value, ())):
                    target.take(rows, change.seq, change.committed_us)

    def _resync(self, tenant_id: str, feed: Feed) -> None:
        """Change sets were lost: every channel of the tenant starts again from a snapshot."""
        log.warning("live feed fell behind; taking fresh snapshots", extra={"tenant": tenant_id})
        for channel in [c for c in self._channels.values() if c.key.tenant_id == tenant_id]:
            channel.ring.clear()  # a resume across the gap could not be exact
            channel.deltas = {}
            self.refresh(channel)

    async def _sweep(self) -> None:
        """Forget channels nobody has listened to for the replay window."""
        while True:
            await asyncio.sleep(SWEEP_S)
            horizon = time.monotonic() - self.config.replay_s
            for channel in list(self._channels.values()):
                idle = channel.idle_since
                if not channel.links and idle is not None and idle <= horizon:
                    self._drop(channel)

    def metric_names(self, tenant_id: str, metrics: str) -> tuple[str, ...]:
        """The metric names, checked and normalised as queries read them."""
        return self._metrics.metric_names(tenant_id, metrics)

    def channel_count(self) -> int:
        return len(self._channels)
