"""The live streams (WebSocket connections and SSE responses) open in this process.

Each stream is answered for by one API key: the key it authenticated with, or the
key that minted its stream token. The register counts them per key (a key may have
``max_per_key`` open at once) and closes them when their access ends: a token
revoked, a key revoked. Closing only asks the stream to end (its closer must not
wait); the stream finishes on its own task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypemeter.errors import RateLimited

Closer = Callable[[str], None]  # called with the reason the stream ends

KEY_REVOKED = "API key revoked"
TOKEN_REVOKED = "stream token revoked"  # noqa: S105 - a close reason, not a secret


@dataclass(eq=False, slots=True)
class OpenStream:
    key_id: str  # the key that answers for the stream
    subscription_id: str | None  # the stream token it was opened with, if any
    close: Closer


class OpenStreams:
    def __init__(self, max_per_key: int) -> None:
        self.max_per_key = max_per_key
        self._by_key: dict[str, set[OpenStream]] = {}
        self._by_token: dict[str, set[OpenStream]] = {}

    def open(self, key_id: str, subscription_id: str | None, close: Closer) -> OpenStream:
        """Register a stream; raises RateLimited when its key has ``max_per_key`` open."""
        limit = self.max_per_key
        if self.count(key_id) >= limit:
            raise RateLimited(
                f"at most {limit} live connections per key (live_max_connections)",
                retry_after=5,
                limit=limit,
                reset_after=5,
            )
        stream = OpenStream(key_id, subscription_id, close)
        self._by_key.setdefault(key_id, set()).add(stream)
        if subscription_id is not None:
            self._by_token.setdefault(subscription_id, set()).add(stream)
        return stream

    def release(self, stream: OpenStream) -> None:
        """Forget a stream that ended (or was closed); releasing twice is harmless."""
        _discard(self._by_key, stream.key_id, stream)
        if stream.subscription_id is not None:
            _discard(self._by_token, stream.subscription_id, stream)

    def count(self, key_id: str) -> int:
        return len(self._by_key.get(key_id, ()))

    def close_key(self, key_id: str, reason: str = KEY_REVOKED) -> int:
        """End every stream the key answers for, its tokens' included; how many."""
        return self._close(self._by_key.get(key_id, ()), reason)

    def close_token(self, subscription_id: str, reason: str = TOKEN_REVOKED) -> int:
        """End every stream opened with the stream token; how many."""
        return self._close(self._by_token.get(subscription_id, ()), reason)

    def close_unless(self, active: Callable[[str], bool], reason: str = KEY_REVOKED) -> int:
        """End every stream whose key is no longer ``active``; how many."""
        gone = [key_id for key_id in self._by_key if not active(key_id)]
        return sum(self.close_key(key_id, reason) for key_id in gone)

    def _close(self, streams: set[OpenStream] | tuple[()], reason: str) -> int:
        ended = list(streams)
        for stream in ended:
            self.release(stream)
            stream.close(reason)
        return len(ended)


def _discard(index: dict[str, set[OpenStream]], name: str, stream: OpenStream) -> None:
    streams = index.get(name)
    if streams is not None:
        streams.discard(stream)
        if not streams:
            del index[name]
