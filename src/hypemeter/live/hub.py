"""The live hub: channels of live totals fed by the change sets of every commit.

The hub reads each tenant's change sets from the change feed at its own pace
(``routing.Feed``), hands them to the channels (``channel.Channel``) and tails
that follow them, takes the channels' snapshots, and times their updates:
coalesced per channel (at most one per ``coalesce_s``), numbered, and kept for
``replay_s`` so that a client reconnecting with the last seq it saw gets what it
missed.

Delivery to a subscriber never waits: each ``Link`` puts into its own bounded
outbox and deals with a full one itself (lagged, or closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from hypemeter.changes.feed import ChangeFeed
from hypemeter.clock import Clock
from hypemeter.errors import HypemeterError, InvalidInput, StoreUnavailable
from hypemeter.live.channel import Channel, ChannelKey, ChannelTable, Link, Replay, Watch
from hypemeter.live.config import LiveConfig
from hypemeter.live.model import LiveFilter
from hypemeter.live.routing import Feed, TailTarget, Tap
from hypemeter.live.throttle import Throttle
from hypemeter.metrics.model import DAY_US, TimeRange, floor_to
from hypemeter.metrics.ports import MetricsStore
from hypemeter.metrics.service import MetricsService

log = logging.getLogger("hypemeter.live")

BUS_BACKLOG = 10_000  # change sets a tenant's feed may fall behind by before resyncing
SWEEP_S = 5.0


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
        self._channels = ChannelTable(config.max_channels_per_tenant)
        self._feeds: dict[str, Feed] = {}
        self._sweeper: asyncio.Task[None] | None = None
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
            replay = Replay(self.config.replay_s, self.config.replay_limit)
            found = Channel(key, self, seq=time.time_ns() // 1000, replay=replay)
            self._channels.add(found)
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
        else raise RateLimited."""
        if not self._channels.full(tenant_id):
            return
        for channel in self._channels.idle(tenant_id=tenant_id):
            self._drop(channel)
        self._channels.require_room(tenant_id)

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
        self._channels.remove(channel)
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
        self._feed(tenant_id).add(*target.route, target)
        return target

    def untap(self, tenant_id: str, target: TailTarget) -> None:
        feed = self._feeds.get(tenant_id)
        if feed is None:
            return
        feed.remove(*target.route, target)
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
                    feed.route(change)
                except Exception:
                    log.exception("live change set not applied", extra={"tenant": tenant_id})
            if feed.subscription.dropped != feed.dropped:
                feed.dropped = feed.subscription.dropped
                self._resync(tenant_id)

    def _resync(self, tenant_id: str) -> None:
        """Change sets were lost: every channel of the tenant starts again from a snapshot."""
        log.warning("live feed fell behind; taking fresh snapshots", extra={"tenant": tenant_id})
        for channel in self._channels.of_tenant(tenant_id):
            channel.replay.clear()  # a resume across the gap could not be exact
            channel.deltas = {}
            self.refresh(channel)

    async def _sweep(self) -> None:
        """Forget channels nobody has listened to for the replay window."""
        while True:
            await asyncio.sleep(SWEEP_S)
            horizon = time.monotonic() - self.config.replay_s
            for channel in self._channels.idle(since=horizon):
                self._drop(channel)

    def metric_names(self, tenant_id: str, metrics: str) -> tuple[str, ...]:
        """The metric names, checked and normalised as queries read them."""
        return self._metrics.metric_names(tenant_id, metrics)

    def channel_count(self) -> int:
        return len(self._channels)
