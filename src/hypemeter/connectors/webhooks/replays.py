"""Which signed deliveries were already processed, for as long as a replay could verify.

Pure: time comes in as ``now_us``. A platform whose signature covers a timestamp
refuses a delivery older than its limit, so a delivery id needs remembering only
for twice that limit (a timestamp may also be that far ahead of our clock). The
memory is bounded: past ``capacity`` ids, the oldest is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

DEFAULT_CAPACITY = 100_000


@dataclass(slots=True)
class ReplayWindow:
    """Delivery ids seen in the last ``ttl_us`` microseconds, at most ``capacity``."""

    ttl_us: int
    capacity: int = DEFAULT_CAPACITY
    _seen: OrderedDict[str, int] = field(default_factory=OrderedDict)  # id -> seen at

    def __post_init__(self) -> None:
        if self.ttl_us <= 0 or self.capacity <= 0:
            raise ValueError("a replay window needs a ttl and a capacity > 0")

    def seen(self, key: str, now_us: int) -> bool:
        """Whether ``key`` was remembered within the window."""
        self._expire(now_us)
        return key in self._seen

    def remember(self, key: str, now_us: int) -> None:
        self._expire(now_us)
        self._seen.pop(key, None)
        self._seen[key] = now_us
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now_us: int) -> None:
        # Insertion order is time order, as long as the clock does not go back; one
        # that does only keeps ids a little longer.
        horizon = now_us - self.ttl_us
        while self._seen:
            key, at = next(iter(self._seen.items()))
            if at > horizon:
                return
            del self._seen[key]
