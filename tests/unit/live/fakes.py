"""Fakes of what a live session asks of the hub, for tests that run no server."""

from __future__ import annotations

from typing import Any

from hypemeter.auth.model import KeyLimits, Principal, Scope
from hypemeter.clock import FixedClock
from hypemeter.errors import HypemeterError
from hypemeter.live.access import Caller
from hypemeter.live.channel import ChannelKey, Replay
from hypemeter.live.config import LiveConfig
from hypemeter.live.model import LiveFilter
from hypemeter.live.routing import TailTarget, Tap

NOW_US = 1_795_996_800_000_000  # 2026-11-30T00:00:00Z


def caller(limits: KeyLimits | None = None) -> Caller:
    principal = Principal("acme", "k1", frozenset({Scope.READ}))
    if limits is not None:
        principal = Principal("acme", "k1", frozenset({Scope.READ}), limits)
    return Caller(principal)


class FakeChannel:
    """A channel whose totals are a count of the updates it sent, and which keeps
    them for resuming as a real channel does."""

    def __init__(self, key: ChannelKey, seq: int = 100) -> None:
        self.key = key
        self.seq = seq
        self.replay = Replay(window_s=300.0, limit=16)
        self.links: list[Any] = []

    def snapshot(self) -> dict[str, Any]:
        return {"filter": self.key.filter.payload(), "totals": {"likes": self.seq}}

    def missed_since(self, last_seq: int) -> list[tuple[int, dict[str, Any]]] | None:
        return self.replay.missed_since(last_seq, self.seq)

    def emit(self, now: float = 0.0) -> dict[str, Any]:
        self.seq += 1
        body = {"totals": {"likes": self.seq}}
        self.replay.keep(self.seq, body, now)
        for link in list(self.links):
            link.deliver("update", body, self.seq)
        return body


class FakeHub:
    """The hub as sessions see it: channels by key, attached links and tails, kept in
    plain collections."""

    def __init__(self, config: LiveConfig | None = None) -> None:
        self.clock = FixedClock(NOW_US)
        self.config = config or LiveConfig()
        self.channels: dict[ChannelKey, FakeChannel] = {}
        self.tails: list[tuple[str, TailTarget]] = []
        self.failure: HypemeterError | None = None  # what taking a channel raises

    def metric_names(self, tenant_id: str, metrics: str) -> tuple[str, ...]:
        return tuple(metrics.split(","))

    async def channel(self, key: ChannelKey) -> FakeChannel:
        if self.failure is not None:
            raise self.failure
        return self.channels.setdefault(key, FakeChannel(key))

    def attach(self, channel: FakeChannel, link: Any) -> None:
        channel.links.append(link)

    def detach(self, channel: FakeChannel, link: Any) -> None:
        channel.links.remove(link)

    def tap(
        self,
        tenant_id: str,
        live_filter: LiveFilter,
        tap: Tap,
        *,
        metrics: frozenset[str] | None = None,
    ) -> TailTarget:
        target = TailTarget(live_filter, tap, metrics)
        self.tails.append((tenant_id, target))
        return target

    def untap(self, tenant_id: str, target: TailTarget) -> None:
        self.tails.remove((tenant_id, target))
