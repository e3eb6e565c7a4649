"""Opening a live stream: a revocation handled while the request is being counted (the
one await between checking the credential and registering the stream) is not missed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from hypemeter.auth.model import Principal, Scope
from hypemeter.backends.embedded.memory_bus import MemoryLiveBus
from hypemeter.clock import FixedClock
from hypemeter.errors import Unauthenticated
from hypemeter.live.access import open_caller
from hypemeter.live.streams import OpenStreams
from hypemeter.live.tokens import StreamTokens

from .test_stream_tokens import NOW_US, FakeTenantStore, issue

KEY = "hm_k1_secret"


class Keys:
    """The part of AuthService that live access uses: one read key, ``k1``."""

    def __init__(self) -> None:
        self.active = {"k1"}

    def authenticate(self, secret: str | None) -> Principal:
        if secret != KEY or "k1" not in self.active:
            raise Unauthenticated("unknown or revoked API key")
        return Principal("acme", "k1", frozenset({Scope.READ}))

    def authorize(self, principal: Principal, scope: Scope) -> None:
        assert scope in principal.scopes

    def key_active(self, key_id: str) -> bool:
        return key_id in self.active


class CountingThenRevoking:
    """A rate limiter whose count lets ``meanwhile`` run, as a revocation notice would."""

    def __init__(self) -> None:
        self.meanwhile: Callable[[], Any] | None = None
        self.hits: list[str] = []

    async def hit_request(self, key_id: str) -> None:
        self.hits.append(key_id)
        if self.meanwhile is not None:
            await self.meanwhile()


@pytest.fixture
async def bus() -> AsyncIterator[MemoryLiveBus]:
    live_bus = MemoryLiveBus()
    await live_bus.start()
    yield live_bus
    await live_bus.aclose()


def services_on(bus: MemoryLiveBus) -> SimpleNamespace:
    tokens = StreamTokens(
        FakeTenantStore(),  # type: ignore[arg-type]  # only the stream-token methods are used
        bus,
        OpenStreams(max_per_key=10),
        per_key=10,
        lookups="100/second",
    )
    return SimpleNamespace(
        stream_tokens=tokens,
        auth=Keys(),
        live=SimpleNamespace(clock=FixedClock(NOW_US)),
        rate_limiter=CountingThenRevoking(),
    )


async def test_a_key_revoked_while_its_stream_opens_is_refused(bus: MemoryLiveBus) -> None:
    services = services_on(bus)
    assert (await open_caller(services, KEY)).key_id == "k1"

    async def revoke_key() -> None:
        services.auth.active.discard("k1")

    services.rate_limiter.meanwhile = revoke_key
    with pytest.raises(Unauthenticated):
        await open_caller(services, KEY)
    assert services.rate_limiter.hits == ["k1", "k1"]


async def test_a_token_revoked_while_its_stream_opens_is_refused(bus: MemoryLiveBus) -> None:
    services = services_on(bus)
    tokens: StreamTokens = services.stream_tokens
    secret, subscription_id = await issue(tokens)
    assert (await open_caller(services, secret)).subscription_id == subscription_id

    async def revoke_token() -> None:
        await tokens.revoke("acme", subscription_id)

    services.rate_limiter.meanwhile = revoke_token
    with pytest.raises(Unauthenticated):
        await open_caller(services, secret)
