"""The Redis pieces of the cluster profile beyond the LiveBus contract, on a real server:
fan-out between processes, a lost connection, and rate limits shared by API processes."""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.backoff import ConstantBackoff

from hypemeter.auth.ratelimit import RateLimiter
from hypemeter.backends import selection
from hypemeter.backends.cluster.redis_bus import RedisLiveBus
from hypemeter.errors import InvalidInput, RateLimited, StoreUnavailable
from hypemeter.live.ports import Subscription

GUARD_SECONDS = 10  # only to turn a hang into a failure; no test depends on timing

BusFactory = Callable[..., Awaitable[RedisLiveBus]]


async def take(sub: Subscription, n: int) -> list[bytes]:
    iterator = aiter(sub)
    async with asyncio.timeout(GUARD_SECONDS):
        return [await anext(iterator) for _ in range(n)]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds."""
    async with asyncio.timeout(GUARD_SECONDS):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.01)


def messages(n: int) -> list[bytes]:
    return [f"m{i}".encode() for i in range(n)]


@pytest.fixture
async def admin(redis_dsn: str) -> AsyncIterator[Redis]:
    """A plain client beside the buses, as an operator or another program would be."""
    client = Redis.from_url(redis_dsn)
    yield client
    await client.aclose()


@pytest.fixture
async def open_bus(redis_dsn: str, redis_channel_prefix: str) -> AsyncIterator[BusFactory]:
    """Started buses sharing one channel prefix, as the API processes of one deployment."""
    opened: list[RedisLiveBus] = []

    async def factory(**options: Any) -> RedisLiveBus:
        bus = RedisLiveBus(redis_dsn, channel_prefix=redis_channel_prefix, **options)
        await bus.start()
        opened.append(bus)
        return bus

    yield factory
    for bus in opened:
        await bus.aclose()


async def client_ids(admin: Redis, name: str) -> list[str]:
    return [str(c["id"]) for c in await admin.client_list() if c["name"] == name]


async def test_a_message_published_in_one_process_reaches_a_subscriber_in_another(
    open_bus: BusFactory,
) -> None:
    ingest = await open_bus()
    push = await open_bus()
    # A publisher cannot rule out subscribers elsewhere.
    assert ingest.interested("changes.acme")
    remote = push.subscribe("changes.acme")
    await remote.ready()  # Redis confirmed the channel: nothing published from now is lost
    for message in messages(50):
        await ingest.publish("changes.acme", message)
    assert await take(remote, 50) == messages(50)
    assert remote.dropped == 0
    await remote.aclose()


async def test_a_subscriber_gets_its_own_process_messages_once(open_bus: BusFactory) -> None:
    ingest = await open_bus()
    push = await open_bus()
    own = ingest.subscribe("t")
    await own.ready()
    await ingest.publish("t", b"mine")
    await push.publish("t", b"theirs")
    assert await take(own, 2) == [b"mine", b"theirs"]


async def test_a_subscription_not_confirmed_in_time_counts_a_drop(
    open_bus: BusFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = await open_bus()
    monkeypatch.setattr("hypemeter.backends.cluster.redis_bus.READY_WAIT_S", 0.0)
    sub = bus.subscribe("t")
    await sub.ready()
    assert sub.dropped == 1


async def test_a_killed_connection_is_restored_and_the_gap_counted_as_a_drop(
    open_bus: BusFactory, admin: Redis, redis_channel_prefix: str
) -> None:
    bus = await open_bus(backoff=ConstantBackoff(0.2))
    sub = bus.subscribe("t")
    channel = f"{redis_channel_prefix}t"

    async def subscribed() -> bool:
        return await admin.pubsub_numsub(channel) == [(channel.encode(), 1)]

    await eventually(subscribed)
    other = await open_bus()
    await other.publish("t", b"before")
    assert await take(sub, 1) == [b"before"]
    assert sub.dropped == 0
    [old_id] = await client_ids(admin, bus.client_name)

    assert await admin.client_kill_filter(_id=old_id) == 1
    assert await admin.publish(channel, b"while-down") == 0  # nobody listens: lost

    await eventually(subscribed)
    [new_id] = await client_ids(admin, bus.client_name)
    assert new_id != old_id
    await other.publish("t", b"after")
    # Subscribed again: an empty message marks the gap, then delivery goes on.
    assert await take(sub, 2) == [b"", b"after"]
    assert sub.dropped == 1
    await sub.aclose()


async def test_a_killed_publish_connection_is_replaced_by_the_next_publish(
    open_bus: BusFactory, admin: Redis, redis_channel_prefix: str
) -> None:
    push = await open_bus()
    sub = push.subscribe("t")
    channel = f"{redis_channel_prefix}t"

    async def subscribed() -> bool:
        return await admin.pubsub_numsub(channel) == [(channel.encode(), 1)]

    await eventually(subscribed)
    ingest = await open_bus()
    await ingest.publish("t", b"first")
    assert await take(sub, 1) == [b"first"]
    [publisher] = await client_ids(admin, f"{ingest.client_name}-publish")
    assert await admin.client_kill_filter(_id=publisher) == 1

    await ingest.publish("t", b"second")
    assert await take(sub, 1) == [b"second"]
    assert ingest.unsent == 0


async def test_rate_limiters_on_one_redis_share_one_budget(redis_dsn: str) -> None:
    first, second = (
        RateLimiter(requests="5/minute", events="10/minute", storage=redis_dsn) for _ in range(2)
    )
    key_id = f"key-{uuid.uuid4().hex}"
    try:
        assert [(await first.hit_request(key_id)).remaining for _ in range(3)] == [4, 3, 2]
        assert [(await second.hit_request(key_id)).remaining for _ in range(2)] == [1, 0]
        with pytest.raises(RateLimited) as refused:
            await second.hit_request(key_id)
        assert refused.value.limit == 5
        with pytest.raises(RateLimited):
            await first.hit_request(key_id)

        assert (await first.hit_events(key_id, 7)).remaining == 3
        with pytest.raises(RateLimited):
            await second.hit_events(key_id, 4)
    finally:
        await first.aclose()
        await second.aclose()


async def test_rate_limiters_in_memory_count_alone() -> None:
    first, second = (RateLimiter(requests="2/minute", events="10/minute") for _ in range(2))
    assert [(await first.hit_request("k")).remaining for _ in range(2)] == [1, 0]
    assert (await second.hit_request("k")).remaining == 1
    await first.aclose()
    await second.aclose()


async def test_a_bus_that_cannot_reach_redis_fails_at_start_naming_the_dsn() -> None:
    bus = RedisLiveBus("redis://:secret@127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable) as failed:
        await bus.start()
    assert failed.value.field == "bus"
    assert failed.value.message.startswith("live bus redis://:***@127.0.0.1:1/0 is unreachable")
    assert "secret" not in failed.value.message


async def test_a_rate_limit_storage_that_cannot_be_reached_is_unavailable() -> None:
    limiter = RateLimiter(requests="5/minute", events="10/minute", storage="redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable) as failed:
        await limiter.hit_request("k")
    assert failed.value.message.startswith("rate limit storage unavailable")
    await limiter.aclose()


def test_redis_dsns_select_the_redis_bus_and_others_are_refused() -> None:
    assert isinstance(selection.open_bus("redis://127.0.0.1:6379/0"), RedisLiveBus)
    assert isinstance(selection.open_bus("rediss://127.0.0.1:6380/0"), RedisLiveBus)
    with pytest.raises(InvalidInput) as refused:
        selection.open_bus("kafka://127.0.0.1:9092")
    assert refused.value.field == "bus"
    assert "redis://host:port/db" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        RateLimiter(requests="5/minute", events="10/minute", storage="kafka://x")
    assert refused.value.field == "rate_limit_storage"


def test_without_the_redis_driver_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "hypemeter.backends.cluster.redis_bus")
    for name in [n for n in sys.modules if n.partition(".")[0] == "redis"]:
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails
    with pytest.raises(InvalidInput) as refused:
        selection.open_bus("redis://127.0.0.1:6379/0")
    assert "pip install 'hypemeter[cluster]'" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        RateLimiter(requests="5/minute", events="10/minute", storage="redis://127.0.0.1:6379/0")
    assert "pip install 'hypemeter[cluster]'" in refused.value.message
