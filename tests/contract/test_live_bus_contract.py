"""LiveBus contract: ordered fan-out, topic isolation, bounded buffers; every backend."""

from __future__ import annotations

import asyncio

from hypemeter.live.ports import LiveBus, Subscription

GUARD_SECONDS = 5  # only to turn a hang into a failure; no test depends on timing


async def take(sub: Subscription, n: int) -> list[bytes]:
    iterator = aiter(sub)
    async with asyncio.timeout(GUARD_SECONDS):
        return [await anext(iterator) for _ in range(n)]


async def drain(sub: Subscription) -> list[bytes]:
    async with asyncio.timeout(GUARD_SECONDS):
        return [message async for message in sub]


def messages(n: int, prefix: str = "m") -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


async def test_messages_arrive_in_publish_order(bus: LiveBus) -> None:
    sub = bus.subscribe("ingested.acme")
    for message in messages(50):
        await bus.publish("ingested.acme", message)
    assert await take(sub, 50) == messages(50)
    await sub.aclose()


async def test_only_messages_after_subscribing_are_delivered(bus: LiveBus) -> None:
    await bus.publish("ingested.acme", b"before")
    sub = bus.subscribe("ingested.acme")
    await bus.publish("ingested.acme", b"after")
    assert await take(sub, 1) == [b"after"]
    await sub.aclose()


async def test_every_subscriber_gets_every_message(bus: LiveBus) -> None:
    first, second = bus.subscribe("t"), bus.subscribe("t")
    for message in messages(5):
        await bus.publish("t", message)
    assert await take(first, 5) == messages(5)
    assert await take(second, 5) == messages(5)
    await first.aclose()
    await second.aclose()


async def test_topics_are_isolated(bus: LiveBus) -> None:
    acme, other = bus.subscribe("ingested.acme"), bus.subscribe("ingested.other")
    await bus.publish("ingested.acme", b"for-acme")
    await bus.publish("ingested.other", b"for-other")
    await bus.publish("ingested.acme2", b"for-nobody")
    assert await take(acme, 1) == [b"for-acme"]
    assert await take(other, 1) == [b"for-other"]
    await acme.aclose()
    assert await drain(acme) == []


async def test_publish_without_subscribers_is_a_no_op(bus: LiveBus) -> None:
    assert await bus.publish("nobody.listens", b"x") is None
    sub = bus.subscribe("nobody.listens")
    await bus.publish("nobody.listens", b"y")
    assert await take(sub, 1) == [b"y"]
    await sub.aclose()


async def test_slow_subscriber_loses_the_oldest_and_never_blocks_publish(bus: LiveBus) -> None:
    slow = bus.subscribe("t", max_pending=3)
    fast = bus.subscribe("t")
    async with asyncio.timeout(GUARD_SECONDS):
        for message in messages(100):
            await bus.publish("t", message)
    assert await take(fast, 100) == messages(100)
    assert await take(slow, 3) == messages(100)[-3:]
    await bus.publish("t", b"next")
    assert await take(slow, 1) == [b"next"]
    await slow.aclose()
    await fast.aclose()


async def test_aclose_ends_a_waiting_iteration(bus: LiveBus) -> None:
    sub = bus.subscribe("t")
    consumer = asyncio.create_task(drain(sub))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not consumer.done()
    await sub.aclose()
    assert await consumer == []


async def test_aclose_after_reading_ends_iteration(bus: LiveBus) -> None:
    sub = bus.subscribe("t")
    await bus.publish("t", b"one")
    assert await take(sub, 1) == [b"one"]
    await sub.aclose()
    await bus.publish("t", b"late")
    assert await drain(sub) == []


async def test_bus_aclose_ends_every_subscription(bus: LiveBus) -> None:
    subs = [bus.subscribe("a"), bus.subscribe("a"), bus.subscribe("b")]
    consumers = [asyncio.create_task(drain(sub)) for sub in subs]
    await asyncio.sleep(0)
    await bus.aclose()
    assert await asyncio.gather(*consumers) == [[], [], []]


async def test_a_topic_with_a_subscriber_is_interesting(bus: LiveBus) -> None:
    sub = bus.subscribe("changes.acme")
    assert bus.interested("changes.acme")
    await sub.aclose()


async def test_after_ready_every_publish_is_delivered(bus: LiveBus) -> None:
    sub = bus.subscribe("t")
    await sub.ready()
    await bus.publish("t", b"first")
    assert await take(sub, 1) == [b"first"]
    assert sub.dropped == 0
    await sub.aclose()


async def test_dropped_counts_what_a_slow_subscriber_lost(bus: LiveBus) -> None:
    sub = bus.subscribe("t", max_pending=3)
    assert sub.dropped == 0
    for message in messages(5):
        await bus.publish("t", message)
    assert await take(sub, 3) == messages(5)[2:]
    assert sub.dropped == 2
    await sub.aclose()
