"""The register of open live streams: a cap per key, and closing by key or by token."""

from __future__ import annotations

import pytest

from hypemeter.errors import RateLimited
from hypemeter.live.streams import OpenStreams


class Ended:
    """Stands for a stream: remembers why it was asked to end."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def test_streams_per_key_are_capped_and_released() -> None:
    streams = OpenStreams(max_per_key=2)
    first = streams.open("k1", None, Ended())
    streams.open("k1", "sub_1", Ended())  # a token's stream counts against its key
    with pytest.raises(RateLimited) as caught:
        streams.open("k1", None, Ended())
    assert caught.value.limit == 2
    assert "live_max_connections" in caught.value.message
    streams.open("k2", None, Ended())  # another key, another count
    streams.release(first)
    streams.release(first)  # twice is harmless
    assert streams.count("k1") == 1
    streams.open("k1", None, Ended())


def test_revoking_a_key_ends_its_streams_and_those_of_its_tokens() -> None:
    streams = OpenStreams(max_per_key=10)
    own, by_token, other = Ended(), Ended(), Ended()
    streams.open("k1", None, own)
    streams.open("k1", "sub_1", by_token)
    streams.open("k2", "sub_2", other)
    assert streams.close_key("k1") == 2
    assert own.reasons == by_token.reasons == ["API key revoked"]
    assert other.reasons == []
    assert streams.count("k1") == 0
    assert streams.close_token("sub_1") == 0  # already gone
    assert streams.close_key("k1") == 0


def test_revoking_a_token_ends_only_its_streams() -> None:
    streams = OpenStreams(max_per_key=10)
    one, two, key = Ended(), Ended(), Ended()
    streams.open("k1", "sub_1", one)
    streams.open("k1", "sub_1", two)
    streams.open("k1", None, key)
    assert streams.close_token("sub_1") == 2
    assert one.reasons == two.reasons == ["stream token revoked"]
    assert key.reasons == []
    assert streams.count("k1") == 1


def test_close_unless_ends_the_streams_of_inactive_keys() -> None:
    streams = OpenStreams(max_per_key=10)
    kept, gone = Ended(), Ended()
    streams.open("alive", None, kept)
    streams.open("dead", "sub_9", gone)
    assert streams.close_unless(lambda key_id: key_id == "alive") == 1
    assert (kept.reasons, gone.reasons) == ([], ["API key revoked"])
