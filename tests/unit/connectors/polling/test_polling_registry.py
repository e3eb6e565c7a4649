"""POLLERS: one poller per polled platform, each keeping within its documented window."""

from __future__ import annotations

import pytest

from hypemeter.connectors.polling import POLLERS, PlatformPoller


def test_the_polled_platforms() -> None:
    assert sorted(POLLERS) == ["instagram", "tiktok", "x", "youtube"]
    for name, poller in POLLERS.items():
        assert poller.platform == name
        assert poller.batch >= 1


@pytest.mark.parametrize("name", ["instagram", "tiktok", "x"])
def test_a_full_bucket_plus_a_window_of_refill_stays_within_the_window(name: str) -> None:
    limits = POLLERS[name].limits
    assert limits.capacity + limits.refill_per_s * limits.window_s <= limits.window_calls


def test_youtube_is_bounded_by_its_daily_quota() -> None:
    limits = POLLERS["youtube"].limits
    assert (limits.daily_units, limits.window_s, limits.window_calls) == (10_000, 86_400, 10_000)


def test_pollers_satisfy_the_port() -> None:
    ports: list[PlatformPoller] = list(POLLERS.values())
    assert all(callable(p.calls) and callable(p.read) for p in ports)
