"""The replay window: delivery ids remembered for a while, in bounded memory."""

from __future__ import annotations

import pytest

from hypemeter.connectors.webhooks.replays import ReplayWindow

S = 1_000_000


def test_an_id_is_seen_within_the_window_and_forgotten_after() -> None:
    window = ReplayWindow(ttl_us=1200 * S)
    assert not window.seen("con_1:twitch:m1", 0)
    window.remember("con_1:twitch:m1", 0)
    assert window.seen("con_1:twitch:m1", 1199 * S)
    assert not window.seen("con_1:twitch:m2", 1199 * S)
    assert not window.seen("con_1:twitch:m1", 1200 * S)
    assert len(window) == 0


def test_remembering_again_restarts_the_window() -> None:
    window = ReplayWindow(ttl_us=10 * S)
    window.remember("a", 0)
    window.remember("b", 5 * S)
    window.remember("a", 8 * S)
    assert window.seen("a", 15 * S)
    assert not window.seen("b", 15 * S)


def test_memory_is_bounded_forgetting_the_oldest_first() -> None:
    window = ReplayWindow(ttl_us=3600 * S, capacity=3)
    for n in range(5):
        window.remember(f"m{n}", n)
    assert len(window) == 3
    assert [window.seen(f"m{n}", 10) for n in range(5)] == [False, False, True, True, True]


def test_a_window_needs_a_ttl_and_a_capacity() -> None:
    with pytest.raises(ValueError, match="ttl and a capacity"):
        ReplayWindow(ttl_us=0)
    with pytest.raises(ValueError, match="ttl and a capacity"):
        ReplayWindow(ttl_us=1, capacity=0)
