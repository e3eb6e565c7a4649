"""StreamTokens on a fake tenant store and the in-memory bus, with a fake monotonic clock.

Two StreamTokens on one bus stand for two API processes sharing a store: what one
revokes, the other hears of.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from hypemeter.auth.ports import StreamTokenRecord
from hypemeter.backends.embedded.memory_bus import MemoryLiveBus
from hypemeter.errors import NotFound, RateLimited
from hypemeter.live.model import LiveFilter, TokenRights
from hypemeter.live.streams import OpenStreams
from hypemeter.live.tokens import SWEEP_MIN, StreamTokens

NOW_US = 1_795_183_200_000_000
HOUR_US = 3_600_000_000
RIGHTS = TokenRights(LiveFilter(influencer_id="inf-1"), ("likes",))


class FakeTenantStore:
    """The stream-token part of the TenantStore port, in memory, counting its reads."""

    def __init__(self) -> None:
        self.tokens: dict[str, StreamTokenRecord] = {}  # by hash
        self.reads = 0

    async def add_stream_token(self, token: StreamTokenRecord, *, limit: int, now_us: int) -> bool:
        self.tokens = {h: t for h, t in self.tokens.items() if t.expires_us > now_us}
        if sum(t.key_id == token.key_id for t in self.tokens.values()) >= limit:
            return False
        self.tokens[token.token_hash] = token
        return True

    async def find_stream_token(self, token_hash: str, now_us: int) -> StreamTokenRecord | None:
        self.reads += 1
        found = self.tokens.get(token_hash)
        return found if found is not None and found.expires_us > now_us else None

    async def revoke_stream_token(
        self, tenant_id: str, subscription_id: str, *, key_id: str | None = None
    ) -> StreamTokenRecord | None:
        for digest, token in list(self.tokens.items()):
            mine = key_id is None or token.key_id == key_id
            if token.tenant_id == tenant_id and token.subscription_id == subscription_id and mine:
                return self.tokens.pop(digest)
        return None

    async def revoke_key_stream_tokens(self, key_id: str) -> list[str]:
        gone = [t for t in self.tokens.values() if t.key_id == key_id]
        self.tokens = {h: t for h, t in self.tokens.items() if t.key_id != key_id}
        return sorted(t.subscription_id for t in gone)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def active(*key_ids: str) -> Callable[[str], bool]:
    return lambda key_id: key_id in key_ids


@pytest.fixture
async def bus() -> AsyncIterator[MemoryLiveBus]:
    live_bus = MemoryLiveBus()
    await live_bus.start()
    yield live_bus
    await live_bus.aclose()


def tokens_on(
    store: FakeTenantStore,
    bus: MemoryLiveBus,
    *,
    per_key: int = 100,
    lookups: str = "1000/second",
    clock: Monotonic | None = None,
) -> StreamTokens:
    return StreamTokens(
        store,  # type: ignore[arg-type]  # only the stream-token methods are used
        bus,
        OpenStreams(max_per_key=100),
        per_key=per_key,
        lookups=lookups,
        monotonic=clock or Monotonic(),
    )


async def issue(tokens: StreamTokens, key_id: str = "k1", **rights: object) -> tuple[str, str]:
    secret, token = await tokens.issue(
        tenant_id="acme",
        key_id=key_id,
        rights=replace(RIGHTS, **rights),  # type: ignore[arg-type]
        expires_us=NOW_US + HOUR_US,
        now_us=NOW_US,
    )
    return secret, token.subscription_id


async def test_an_unknown_token_costs_one_store_read_per_ttl(bus: MemoryLiveBus) -> None:
    store, clock = FakeTenantStore(), Monotonic()
    tokens = tokens_on(store, bus, clock=clock)
    for _ in range(5):
        assert await tokens.resolve("hst_madeup", NOW_US, key_active=active("k1")) is None
    assert (store.reads, tokens.store_reads) == (1, 1)
    clock.now += 61  # past the negative cache's minute
    assert await tokens.resolve("hst_madeup", NOW_US, key_active=active("k1")) is None
    assert store.reads == 2


async def test_a_process_that_only_resolves_tokens_forgets_the_expired_ones(
    bus: MemoryLiveBus,
) -> None:
    store = FakeTenantStore()
    minter = tokens_on(store, bus)
    resolver = tokens_on(store, bus, lookups=f"{4 * SWEEP_MIN}/second")
    secrets = []
    for n in range(3 * SWEEP_MIN):
        secret, _ = await minter.issue(
            tenant_id="acme",
            key_id=f"k{n}",
            rights=RIGHTS,
            expires_us=NOW_US + n + 1,
            now_us=NOW_US,
        )
        secrets.append(secret)
    # Each token is resolved while it is live; by then the earlier ones have expired.
    for n, secret in enumerate(secrets):
        found = await resolver.resolve(secret, NOW_US + n, key_active=lambda _: True)
        assert found is not None
    assert len(resolver._by_hash) <= 2 * SWEEP_MIN
    assert len(resolver._by_id) == len(resolver._by_hash)


async def test_store_lookups_of_unknown_tokens_are_rate_limited(bus: MemoryLiveBus) -> None:
    store = FakeTenantStore()
    tokens = tokens_on(store, bus, lookups="3/minute")
    for n in range(3):
        assert await tokens.resolve(f"hst_guess{n}", NOW_US, key_active=active()) is None
    with pytest.raises(RateLimited) as caught:
        await tokens.resolve("hst_guess3", NOW_US, key_active=active())
    assert "stream_token_lookups" in caught.value.message
    assert store.reads == 3  # the refused lookup never reached the store


async def test_a_cached_token_of_an_inactive_key_is_refused(bus: MemoryLiveBus) -> None:
    store = FakeTenantStore()
    tokens = tokens_on(store, bus)
    secret, _ = await issue(tokens)
    assert await tokens.resolve(secret, NOW_US, key_active=active("k1")) is not None
    # The key is revoked (the token is even still in the store): refused, and forgotten.
    assert await tokens.resolve(secret, NOW_US, key_active=active()) is None
    reads = store.reads
    assert await tokens.resolve(secret, NOW_US, key_active=active()) is None
    assert store.reads == reads + 1  # looked up again, never served from the cache


async def test_tokens_per_key_are_capped(bus: MemoryLiveBus) -> None:
    tokens = tokens_on(FakeTenantStore(), bus, per_key=2)
    await issue(tokens)
    await issue(tokens)
    with pytest.raises(RateLimited) as caught:
        await issue(tokens)
    assert caught.value.limit == 2
    assert "stream_tokens_per_key" in caught.value.message
    await issue(tokens, key_id="k2")


async def test_the_tail_right_travels_through_the_store(bus: MemoryLiveBus) -> None:
    store = FakeTenantStore()
    here, there = tokens_on(store, bus), tokens_on(store, bus)
    with_tail, _ = await issue(here, tail=True)
    without, _ = await issue(here)
    found = await there.resolve(with_tail, NOW_US, key_active=active("k1"))
    assert found is not None
    assert found.rights == TokenRights(LiveFilter(influencer_id="inf-1"), ("likes",), True)
    other = await there.resolve(without, NOW_US, key_active=active("k1"))
    assert other is not None
    assert other.rights.tail is False


async def test_a_read_key_revokes_only_the_tokens_it_minted(bus: MemoryLiveBus) -> None:
    tokens = tokens_on(FakeTenantStore(), bus)
    _, sub_id = await issue(tokens, key_id="k1")
    with pytest.raises(NotFound):
        await tokens.revoke("acme", sub_id, key_id="k2")
    token, _ = await tokens.revoke("acme", sub_id, key_id="k1")
    assert token.subscription_id == sub_id
    _, sub_id = await issue(tokens, key_id="k1")
    token, _ = await tokens.revoke("acme", sub_id)  # an admin key: any token of the tenant
    assert token.subscription_id == sub_id


async def test_a_revoked_key_ends_streams_on_every_process(bus: MemoryLiveBus) -> None:
    store = FakeTenantStore()
    here, there = tokens_on(store, bus), tokens_on(store, bus)
    await here.start()
    await there.start()
    try:
        secret, sub_id = await issue(here)
        assert await there.resolve(secret, NOW_US, key_active=active("k1")) is not None
        ended: list[str] = []
        both = asyncio.Event()

        def end(reason: str) -> None:
            ended.append(reason)
            if len(ended) == 2:
                both.set()

        there.streams.open("k1", None, end)  # the key's own stream
        there.streams.open("k1", sub_id, end)  # a stream of its token
        there.streams.open("k2", None, end)  # another key's
        await store.revoke_key_stream_tokens("k1")  # what AuthService.revoke_key does first
        await here.key_revoked("k1")
        await asyncio.wait_for(both.wait(), 5)
        assert ended == ["API key revoked", "API key revoked"]
        assert there.streams.count("k1") == 0
        assert there.streams.count("k2") == 1
        # The cached token is gone there too: the store is asked, and knows it no more.
        assert await there.resolve(secret, NOW_US, key_active=active("k1")) is None
    finally:
        await here.aclose()
        await there.aclose()


async def test_recheck_ends_what_keys_revoked_elsewhere_left_open(bus: MemoryLiveBus) -> None:
    store = FakeTenantStore()
    tokens = tokens_on(store, bus)
    secret, sub_id = await issue(tokens)
    assert await tokens.resolve(secret, NOW_US, key_active=active("k1")) is not None
    ended: list[str] = []
    tokens.streams.open("k1", sub_id, ended.append)
    await tokens.recheck(active())  # the keys reloaded: k1 is no longer active
    assert ended == ["API key revoked"]
    assert await tokens.resolve(secret, NOW_US, key_active=active()) is None
