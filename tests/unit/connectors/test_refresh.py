"""The token keeper and the poller that owns it, with a fixed clock and a mock platform:
refresh when due, retry refusals later, keep a token the store could not save, and a
poller that follows its own refresh without restarting."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import msgspec
import pytest

from hypemeter.clock import FixedClock
from hypemeter.connectors.model import Connector
from hypemeter.connectors.pollers import ConnectorPoller
from hypemeter.connectors.polling import POLLERS, Call
from hypemeter.connectors.polling.tokens import REFRESHERS, TokenRefresher, format_time
from hypemeter.connectors.refresh import TokenKeeper
from hypemeter.errors import SecretsUnavailable, StoreUnavailable

NOW_US = 1_795_183_200_000_000
S = 1_000_000
SOON = format_time(NOW_US + 3600 * S)  # within Instagram's 7-day margin
LATER = format_time(NOW_US + 30 * 86_400 * S)


@dataclass
class Held:
    secrets: Mapping[str, str]


class Platform:
    """Answers Instagram's refresh with the next token, or with a scripted refusal."""

    def __init__(self, lifetime: object = 5183944) -> None:
        self.seen: list[str] = []
        self.refuse = 0
        self.lifetime = lifetime

    def handle(self, request: httpx.Request) -> httpx.Response:
        token = request.url.params["access_token"]
        self.seen.append(token)
        if self.refuse:
            self.refuse -= 1
            body = {"error": {"message": "Session has expired", "code": 190}}
            return httpx.Response(400, json=body)
        new = f"{token}+"
        return httpx.Response(200, json={"access_token": new, "expires_in": self.lifetime})


class Saved:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[int, dict[str, str], dict[str, str]]] = []
        self.attempts = 0
        self.failures = 0
        self.error = error or StoreUnavailable("the store is down")

    async def __call__(self, index: int, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        self.calls.append((index, dict(old), dict(new)))


def keeper(
    platform: Platform,
    clock: FixedClock,
    save: Saved,
    refresher: TokenRefresher = REFRESHERS["instagram"],
) -> TokenKeeper:
    http = httpx.AsyncClient(transport=httpx.MockTransport(platform.handle))
    return TokenKeeper(
        refresher, base_url="http://ig", http=http, clock=clock, secrets={}, save=save
    )


async def test_a_token_due_is_refreshed_once_used_and_saved() -> None:
    platform, clock, save = Platform(), FixedClock(NOW_US), Saved()
    kept = keeper(platform, clock, save)
    held = [
        Held({"access_token": "a", "expires_at": SOON}),
        Held({"access_token": "b", "expires_at": LATER}),
    ]
    await kept.keep(held)
    assert platform.seen == ["a"]
    assert held[0].secrets == {
        "access_token": "a+",
        "expires_at": format_time(NOW_US + 5183944 * S),
    }
    assert held[1].secrets["access_token"] == "b"
    assert save.calls == [(0, {"access_token": "a", "expires_at": SOON}, dict(held[0].secrets))]
    assert kept.unsaved == {} and kept.health.last_refresh_us == NOW_US
    assert kept.earliest_expiry_us(held) == NOW_US + 30 * 86_400 * S  # "b" expires first
    clock.advance(3600)
    await kept.keep(held)
    assert platform.seen == ["a"]  # the new token is 60 days from expiry


async def test_a_refusal_shows_and_is_tried_again_later_and_later() -> None:
    platform, clock, save = Platform(), FixedClock(NOW_US), Saved()
    platform.refuse = 2
    kept = keeper(platform, clock, save)
    held = [Held({"access_token": "a", "expires_at": SOON})]
    await kept.keep(held)
    assert kept.health.error == "instagram token refresh refused: HTTP 400, error 190"
    assert kept.health.error_detail == "Session has expired"
    for seconds, attempts in ((59, 1), (1, 2), (119, 2), (1, 3)):
        clock.advance(seconds)
        await kept.keep(held)
        assert len(platform.seen) == attempts, seconds
    assert held[0].secrets["access_token"] == "a+"
    assert kept.health.error is None and kept.health.error_detail is None


async def test_a_token_the_store_could_not_save_is_used_and_saved_later() -> None:
    platform, clock, save = Platform(), FixedClock(NOW_US), Saved()
    save.failures = 1
    kept = keeper(platform, clock, save)
    held = [Held({"access_token": "a", "expires_at": SOON})]
    await kept.keep(held)
    assert held[0].secrets["access_token"] == "a+"  # the platform may have retired "a"
    assert kept.health.error == "token refreshed but not saved yet: StoreUnavailable"
    assert set(kept.unsaved) == {0} and save.calls == []
    clock.advance(60)  # the first step of the backoff
    await kept.keep(held)
    assert [(i, old["access_token"], new["access_token"]) for i, old, new in save.calls] == [
        (0, "a", "a+")
    ]
    assert kept.unsaved == {} and platform.seen == ["a"]


async def test_a_platform_out_of_reach_is_a_reason_without_secrets() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    clock = FixedClock(NOW_US)
    http = httpx.AsyncClient(transport=httpx.MockTransport(down))
    kept = TokenKeeper(
        REFRESHERS["instagram"],
        base_url="http://ig",
        http=http,
        clock=clock,
        secrets={},
        save=Saved(),
    )
    await kept.keep([Held({"access_token": "secret-token", "expires_at": SOON})])
    assert kept.health.error == "instagram token refresh: instagram unreachable"
    assert "secret-token" not in f"{kept.health.error}{kept.health.error_detail}"


async def test_a_save_that_keeps_failing_is_tried_after_a_backoff_and_logged_once_a_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    platform, clock = Platform(), FixedClock(NOW_US)
    save = Saved(SecretsUnavailable("no key to seal secrets with: set HYPEMETER_SECRETS_KEY"))
    save.failures = 4
    kept = keeper(platform, clock, save)
    held = [Held({"access_token": "a", "expires_at": SOON})]
    attempts_at: list[float] = []
    with caplog.at_level(logging.WARNING, logger="hypemeter.pollers"):
        for tick in range(2 * 60 * 16):  # sixteen minutes of rounds, one each 0.5 s
            if tick == 2 * 60 * 15:
                assert kept.health.error == "token refreshed but not saved yet: SecretsUnavailable"
            before = save.attempts
            await kept.keep(held)
            if save.attempts > before:
                attempts_at.append(tick / 2)
            clock.advance(0.5)
    assert attempts_at == [0, 60, 180, 420, 900]  # 1, 2, 4, 8 minutes apart; then saved
    unsaved = [
        r for r in caplog.records if r.getMessage() == "a refreshed token could not be saved"
    ]
    assert len(unsaved) == 4  # once a step
    assert platform.seen == ["a"]  # refreshed once; the new token is used meanwhile
    assert held[0].secrets["access_token"] == "a+"
    assert kept.unsaved == {} and [new["access_token"] for _, _, new in save.calls] == ["a+"]


@pytest.mark.parametrize("lifetime", [10**30, 1e300, -1, "soon", None])
async def test_a_lifetime_no_token_has_is_a_failed_refresh_retried_after_a_backoff(
    lifetime: object,
) -> None:
    platform, clock, save = Platform(lifetime), FixedClock(NOW_US), Saved()
    kept = keeper(platform, clock, save)
    held = [Held({"access_token": "secret-token", "expires_at": SOON})]
    for _ in range(10):  # five seconds of rounds
        await kept.keep(held)
        clock.advance(0.5)
    assert platform.seen == ["secret-token"]
    assert held[0].secrets["access_token"] == "secret-token" and save.calls == []
    assert kept.health.error == "instagram token refresh: the answer has no valid expires_in"
    assert "secret-token" not in f"{kept.health.error}{kept.health.error_detail}"
    clock.advance(55)
    await kept.keep(held)
    assert len(platform.seen) == 2


@dataclass(frozen=True)
class Overflowing:
    """A refresher whose answers cannot be made times (as a platform's could not once)."""

    platform: str = "instagram"
    margin_s: float = 7 * 86_400.0

    def call(self, credential: Mapping[str, str], secrets: Mapping[str, str], now_us: int) -> Call:
        return REFRESHERS["instagram"].call(credential, secrets, now_us)

    def read(self, status: int, body: bytes, now_us: int) -> dict[str, str]:
        return {"access_token": "new", "expires_at": format_time(now_us + 10**30)}


async def test_an_answer_that_cannot_be_read_is_a_failed_refresh_without_secrets() -> None:
    platform, clock, save = Platform(), FixedClock(NOW_US), Saved()
    kept = keeper(platform, clock, save, Overflowing())
    held = [Held({"access_token": "secret-token", "expires_at": SOON})]
    for _ in range(10):
        await kept.keep(held)
        clock.advance(0.5)
    assert platform.seen == ["secret-token"]
    assert kept.health.error == "instagram token refresh failed: OverflowError"
    assert kept.health.error_detail is None
    clock.advance(55)
    await kept.keep(held)
    assert len(platform.seen) == 2


# -- the poller follows the connector as stored -----------------------------------------


def poller(connector: Connector, save: Saved | None = None) -> ConnectorPoller:
    async def saved(
        tenant: str, cid: str, index: int, old: Mapping[str, str], new: Mapping[str, str]
    ) -> Connector | None:
        if save is not None:
            await save(index, old, new)
        credentials = list(connector.credentials)
        credentials[index] = dict(new)
        return msgspec.structs.replace(connector, credentials=tuple(credentials))

    http = httpx.AsyncClient(transport=httpx.MockTransport(Platform().handle))
    return ConnectorPoller(
        "acme",
        connector,
        POLLERS["instagram"],
        base_url="http://ig",
        http=http,
        registry=None,  # type: ignore[arg-type]
        ingest=None,  # type: ignore[arg-type]
        clock=FixedClock(NOW_US),
        backoff=(1.0, 1.0),
        token_url="http://ig",
        save=saved,
    )


CONNECTOR = Connector(
    id="con_1",
    platform="instagram",
    secrets={"app_secret": "s", "verify_token": "v"},
    credentials=({"access_token": "a", "expires_at": SOON},),
)


def refreshed(connector: Connector) -> Connector:
    credential = {"access_token": "a+", "expires_at": format_time(NOW_US + 5183944 * S)}
    return msgspec.structs.replace(connector, credentials=(credential,))


async def test_a_poller_follows_its_own_refresh_and_nothing_else() -> None:
    running = poller(CONNECTOR)
    assert running.follows(CONNECTOR)
    assert running.keeper is not None
    await running.keeper.keep(running.credentials)
    assert running.follows(refreshed(CONNECTOR))  # what it saved: no restart
    assert not running.follows(CONNECTOR)  # the old token, once saved, is no longer it
    other = {"access_token": "someone-else", "expires_at": LATER}
    assert not running.follows(msgspec.structs.replace(CONNECTOR, credentials=(other,)))
    assert not running.follows(
        msgspec.structs.replace(refreshed(CONNECTOR), poll={"enabled": True})
    )


async def test_until_its_refresh_is_saved_a_poller_follows_the_stored_old_token() -> None:
    save = Saved()
    save.failures = 1
    running = poller(CONNECTOR, save)
    assert running.keeper is not None
    await running.keeper.keep(running.credentials)
    assert running.credentials[0].secrets["access_token"] == "a+"
    assert running.follows(CONNECTOR)  # the store still holds the old one
    assert running.follows(refreshed(CONNECTOR))


def test_only_platforms_whose_tokens_expire_get_a_keeper() -> None:
    assert sorted(REFRESHERS) == ["instagram", "tiktok"]
    youtube = Connector(id="con_2", platform="youtube", secrets={}, credentials=({"api_key": "k"},))
    http = httpx.AsyncClient(transport=httpx.MockTransport(Platform().handle))
    running = ConnectorPoller(
        "acme",
        youtube,
        POLLERS["youtube"],
        base_url="http://yt",
        http=http,
        registry=None,  # type: ignore[arg-type]
        ingest=None,  # type: ignore[arg-type]
        clock=FixedClock(NOW_US),
        backoff=(1.0, 1.0),
        token_url=None,
    )
    assert running.keeper is None
