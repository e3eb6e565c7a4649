"""The channels of a process counted per tenant: the cap, its error, and idle channels."""

from __future__ import annotations

import pytest

from hypemeter.clock import FixedClock
from hypemeter.errors import RateLimited
from hypemeter.live.channel import Channel, ChannelKey, ChannelTable, Replay
from hypemeter.live.config import LiveConfig
from hypemeter.live.model import LiveFilter
from hypemeter.metrics.model import Grain

from .fakes import NOW_US


class Host:
    """A hub that is never asked to refresh or schedule here."""

    def __init__(self) -> None:
        self.clock = FixedClock(NOW_US)
        self.config = LiveConfig()

    def refresh(self, channel: Channel) -> None:
        raise AssertionError("not expected")

    def schedule(self, channel: Channel) -> None:
        raise AssertionError("not expected")


def channel(tenant_id: str, influencer_id: str, *, idle_since: float | None = None) -> Channel:
    key = ChannelKey(tenant_id, LiveFilter(influencer_id=influencer_id), "likes", Grain.DAY, 0)
    made = Channel(key, Host(), seq=1, replay=Replay(300.0, 16))
    made.idle_since = idle_since
    return made


def test_a_tenant_with_its_fill_of_channels_is_refused_with_the_limit() -> None:
    table = ChannelTable(max_per_tenant=2)
    table.add(channel("acme", "a"))
    table.add(channel("acme", "b"))
    table.add(channel("globex", "a"))
    assert (table.count("acme"), table.count("globex"), len(table)) == (2, 1, 3)
    assert table.full("acme") and not table.full("globex")
    with pytest.raises(RateLimited) as refused:
        table.require_room("acme")
    assert refused.value.message == (
        "at most 2 live channels per tenant (live_max_channels_per_tenant): "
        "subscribe to the same filter, metrics, granularity and since as others do"
    )
    assert (refused.value.limit, refused.value.retry_after) == (2, 5)
    table.require_room("globex")


def test_removing_frees_room_only_for_the_channel_held_under_its_key() -> None:
    table = ChannelTable(max_per_tenant=2)
    held = channel("acme", "a")
    table.add(held)
    table.remove(channel("acme", "a"))  # the same key, another channel: not held
    assert table.get(held.key) is held and table.count("acme") == 1
    table.remove(held)
    table.remove(held)
    assert (table.get(held.key), table.count("acme"), len(table)) == (None, 0, 0)


def test_idle_channels_are_those_nobody_listens_to() -> None:
    table = ChannelTable(max_per_tenant=10)
    old = channel("acme", "old", idle_since=10.0)
    recent = channel("acme", "recent", idle_since=50.0)
    never_listened = channel("acme", "fresh")  # being opened: not idle
    other = channel("globex", "old", idle_since=10.0)
    listened = channel("acme", "busy", idle_since=10.0)
    listened.links.add(object())  # type: ignore[arg-type]
    for made in (old, recent, never_listened, other, listened):
        table.add(made)
    assert table.idle(tenant_id="acme") == [old, recent]
    assert table.idle(since=20.0) == [old, other]
    assert table.of_tenant("globex") == [other]
