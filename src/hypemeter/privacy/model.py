"""The rules of retention and erasure, pure: no I/O.

Retention: events older than ``retention_days`` are purged whole UTC days at a time
(the cutoff is the start of the UTC day that holds ``now - retention``), so every
rollup bucket (minute, hour, day) is purged whole and a query inside the retention,
which may start at ``now - retention`` at the earliest, loses nothing. Of each
snapshot series a purge keeps the newest reading before the cutoff: a gauge's value
at the start of a range is its last reading before it, however old. Dead letters are
deleted ``dead_letter_days`` after they were received or last replayed (or after the
retention, if shorter).

Erasure: a dead letter is erased with an influencer when its raw body names the
influencer: their id or one of their accounts' ids appears in it as a whole value
(a JSON string, number or key), or, in a body that is not JSON (YouTube's Atom
feed), as a whole token (not part of a longer id).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from hypemeter.metrics.model import DAY_US

# Characters that continue an id: an identifier next to one is part of a longer id.
_ID_CHARS = "A-Za-z0-9_.-"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retention_days: int
    dead_letter_days: int

    def events_cutoff(self, now_us: int) -> int:
        """Events before this instant (a UTC midnight) are purged."""
        return (now_us - self.retention_days * DAY_US) // DAY_US * DAY_US

    def letters_cutoff(self, now_us: int) -> int:
        """Dead letters last changed before this instant are purged."""
        return now_us - min(self.dead_letter_days, self.retention_days) * DAY_US


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """One purge pass: when it ran, its cutoff, and what it deleted per tenant."""

    started_us: int
    finished_us: int
    cutoff_us: int
    events: Mapping[str, int] = field(default_factory=dict)
    dead_letters: Mapping[str, int] = field(default_factory=dict)


def mentions(body: bytes, identifiers: Collection[str]) -> bool:
    """Whether a delivery's raw body names one of ``identifiers`` (see the module)."""
    wanted = {i for i in identifiers if i}
    if not wanted:
        return False
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", errors="replace")
        return any(
            re.search(f"(?<![{_ID_CHARS}]){re.escape(i)}(?![{_ID_CHARS}])", text) for i in wanted
        )
    return any(value in wanted for value in _scalars(document))


def _scalars(node: Any) -> Iterator[str]:
    """Every string, number and object key of a decoded JSON document, as text."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from (str(k) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            yield item
        elif isinstance(item, int | float) and not isinstance(item, bool):
            yield str(item)
