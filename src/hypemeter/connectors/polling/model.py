"""Value types of polling, and what the platform modules share to build and read calls.

Pure: no I/O and no clock; time comes in as ``now_us`` (microseconds since the
epoch). A ``PlatformPoller`` turns the targets that are due into ``Call``s (one
HTTP request each) and reads a 2xx body into an ``Answer``; the service sends the
requests, keeps a ``TokenBucket`` per credential, pauses a credential when
``rate_signal`` says so, retries 5xx after ``backoff_s`` and reschedules each
target after ``poll_interval_s`` (that arithmetic lives in ``pacing``).

Credentials travel in headers wherever the platform takes them there, never in a
URL that a proxy or a log could keep. What the platform says in its error messages
is kept apart (``Problem.upstream``, ``PollError.upstream``): admins see it, read
keys see only Hypemeter's own summary.

Errors::

    Exception
    └── PollError   a call cannot be built (the credential lacks a secret), or a
                    body is not in the platform's format
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

US_PER_S = 1_000_000
METRICS = frozenset(
    {"views", "likes", "comments", "shares", "saves", "reach", "impressions", "followers"}
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PACIFIC = "America/Los_Angeles"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Target:
    """One tracked content item; ``account_id`` is its platform account (a YouTube channel)."""

    content_id: str
    published_us: int | None = None
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request; ``path`` is relative to the platform's base URL (version included)."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Mapping[str, Any] | None = None
    form: Mapping[str, str] | None = None  # an application/x-www-form-urlencoded body
    headers: Mapping[str, str] = field(default_factory=dict)
    content_ids: tuple[str, ...] = ()  # the targets this call reads
    account_ids: tuple[str, ...] = ()  # the accounts whose followers it reads
    cost: int = 1  # quota units (YouTube)


@dataclass(frozen=True, slots=True)
class Reading:
    """One counter as read; raises ValueError for an unknown metric or a value below 0."""

    content_id: str | None
    account_id: str | None
    metric: str
    value: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}")
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"{self.metric} must be a finite count >= 0, not {self.value!r}")


@dataclass(frozen=True, slots=True)
class Problem:
    """Something a response did not yield: ``summary`` in Hypemeter's words (ids, field
    names), ``upstream`` the platform's own message, if it sent one."""

    summary: str
    upstream: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What one response yielded: readings, and what could not be read (for the health view)."""

    readings: tuple[Reading, ...] = ()
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """A credential's documented budget: the bucket, the platform's window, a daily quota."""

    capacity: int
    refill_per_s: float
    window_s: int
    window_calls: int
    daily_units: int | None = None


class PlatformPoller(Protocol):
    """How one platform is polled; implementations are frozen and stateless."""

    @property
    def platform(self) -> str: ...
    @property
    def batch(self) -> int: ...  # the most content ids one call reads
    @property
    def limits(self) -> Limits: ...  # one credential's documented defaults

    def calls(self, targets: Sequence[Target], credential: Mapping[str, str]) -> list[Call]:
        """The requests that read ``targets``; raises PollError when a secret is missing."""

    def read(self, call: Call, status: int, body: bytes) -> Answer:
        """Read a 2xx body; raises PollError when it is not in the platform's format."""


class PollError(Exception):
    """``reason`` in Hypemeter's words; ``upstream`` what the platform answered, if anything."""

    def __init__(self, reason: str, *, upstream: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.upstream = upstream


def finite_number(value: object) -> float | None:
    """``value`` as a float when it is a finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# Shared by the platform modules.


def require_secret(credential: Mapping[str, str], name: str, platform: str) -> str:
    secret = credential.get(name)
    if not secret:
        raise PollError(f"{platform}: the credential has no {name!r}")
    return secret


def batches(ids: Iterable[str | None], size: int) -> list[tuple[str, ...]]:
    """Distinct non-empty ids in their first order, ``size`` at a time."""
    unique = list(dict.fromkeys(i for i in ids if i))
    return [tuple(unique[start : start + size]) for start in range(0, len(unique), size)]


def decode(body: bytes, shape: type[_T], platform: str) -> _T:
    try:
        return msgspec.json.decode(body, type=shape)
    except msgspec.DecodeError as error:  # ValidationError included
        raise PollError(
            f"{platform}: the answer is not in the documented format: {error}"
        ) from None


def count(raw: object) -> float | None:
    """A counter sent as a number or a string of digits (YouTube); None for anything else."""
    if isinstance(raw, str):
        raw = float(raw) if raw.isascii() and raw.isdigit() else None
    value = finite_number(raw)
    return value if value is not None and value >= 0 else None


@dataclass(slots=True)
class AnswerBuilder:
    """Collects readings and problems while one body is read."""

    readings: list[Reading] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def add(self, content_id: str | None, account_id: str | None, metric: str, raw: object) -> None:
        """An absent counter (None) is no reading; a malformed one is a problem."""
        value = count(raw)
        if value is not None:
            self.readings.append(Reading(content_id, account_id, metric, value))
        elif raw is not None:
            self.problems.append(
                Problem(f"{content_id or account_id}: {metric} is not a count", f"{raw!r}"[:200])
            )

    def missing(
        self,
        wanted: Iterable[str],
        seen: Iterable[str],
        what: str,
        why: str = "deleted or private?",
    ) -> None:
        present = set(seen)
        self.problems += [
            Problem(f"{what} {i} not in the answer ({why})") for i in wanted if i not in present
        ]

    def answer(self) -> Answer:
        return Answer(tuple(self.readings), tuple(self.problems))
