"""Value types of polling, and the arithmetic of calling platforms politely.

Pure: no I/O and no clock; time comes in as ``now_us`` (microseconds since the
epoch). A ``PlatformPoller`` turns the targets that are due into ``Call``s (one
HTTP request each) and reads a 2xx body into an ``Answer``; the service sends the
requests, keeps a ``TokenBucket`` per credential, pauses a credential when
``rate_signal`` says so, retries 5xx after ``backoff_s`` and reschedules each
target after ``poll_interval_s``. YouTube's daily quota resets at
``next_pacific_midnight_us``.

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
import email.utils
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

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


@dataclass(slots=True)
class TokenBucket:
    """Smooths one credential's calls: at most ``capacity`` at once, ``refill_per_s`` after."""

    capacity: float
    refill_per_s: float
    tokens: float
    updated_us: int

    def __post_init__(self) -> None:
        if not (self.capacity > 0 and self.refill_per_s > 0):
            raise ValueError("a token bucket needs a capacity > 0 and a refill rate > 0")
        self.tokens = min(max(self.tokens, 0.0), self.capacity)

    def _level(self, now_us: int) -> float:
        elapsed_s = max(now_us - self.updated_us, 0) / US_PER_S
        return min(self.capacity, self.tokens + elapsed_s * self.refill_per_s)

    def take(self, now_us: int, n: float = 1) -> bool:
        """Take ``n`` tokens if they are there now; a clock going back refills nothing."""
        self.tokens = self._level(now_us)
        self.updated_us = max(self.updated_us, now_us)
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def wait_us(self, now_us: int, n: float = 1) -> int:
        """Microseconds until ``n`` tokens are there (0 if now); ValueError if never."""
        if n > self.capacity:
            raise ValueError(f"{n} tokens exceed the bucket's capacity {self.capacity}")
        short = n - self._level(now_us)
        if short <= 0:
            return 0
        wait = math.ceil(short / self.refill_per_s * US_PER_S)
        while self._level(now_us + wait) < n:  # float rounding: the first moment, not near it
            wait += 1
        while wait > 1 and self._level(now_us + wait - 1) >= n:
            wait -= 1
        return wait


@dataclass(frozen=True, slots=True)
class RateSignal:
    """What an answer's headers say: pause the credential until when, and why.

    ``remaining``/``limit`` are calls (X, Twitch); ``used_percent`` is Meta's usage.
    """

    pause_until_us: int | None = None
    remaining: int | None = None
    limit: int | None = None
    reason: str | None = None
    used_percent: float | None = None


# Reset headers below this are seconds from now (IETF RateLimit draft), above it unix seconds.
_UNIX_S_FLOOR = 1_000_000_000
_META_PERCENTS = ("call_count", "total_time", "total_cputime")
_META_DEFAULT_PAUSE_S = 3600


def rate_signal(status: int, headers: Mapping[str, str], now_us: int) -> RateSignal:
    """Read every known rate-limit header family; malformed headers are ignored.

    The latest explicit time wins (Retry-After, a reset with nothing remaining, Meta's
    estimated_time_to_regain_access); Meta usage at 100% with no time pauses an hour.
    A 429 with none of these has no pause: the caller backs off.
    """
    lower = {key.lower(): value for key, value in headers.items()}
    pauses: list[tuple[int, str]] = []
    retry_us = _retry_after_us(lower.get("retry-after"), now_us)
    if retry_us is not None:
        pauses.append((retry_us, "Retry-After"))
    remaining = limit = None
    for prefix in ("x-rate-limit-", "ratelimit-"):
        left, most, reset_s = (_int(lower.get(prefix + k)) for k in ("remaining", "limit", "reset"))
        if remaining is None and left is not None:
            remaining, limit = left, most
        if left == 0 and reset_s is not None:
            at = reset_s * US_PER_S if reset_s >= _UNIX_S_FLOOR else now_us + reset_s * US_PER_S
            if at > now_us:
                pauses.append((at, f"{prefix}remaining is 0"))
    percent, regain_us = _meta_usage(lower, now_us)
    if regain_us is not None:
        pauses.append((regain_us, "Meta: estimated_time_to_regain_access"))
    pause, reason = max(pauses) if pauses else (None, None)
    if pause is None and percent is not None and percent >= 100:
        pause, reason = now_us + _META_DEFAULT_PAUSE_S * US_PER_S, f"Meta usage at {percent:g}%"
    if reason is None and status == 429:
        reason = "429 without a reset time"
    return RateSignal(pause, remaining, limit, reason, percent)


def _int(raw: str | None) -> int | None:
    text = (raw or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _retry_after_us(raw: str | None, now_us: int) -> int | None:
    """Retry-After as delta-seconds or an HTTP-date; a time already past means now."""
    if raw is None:
        return None
    seconds = _int(raw)
    if seconds is not None:
        return now_us + seconds * US_PER_S
    try:
        moment = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000" means UTC without a stated zone
        moment = moment.replace(tzinfo=dt.UTC)
    return max(now_us, (moment - _EPOCH) // dt.timedelta(microseconds=1))


def _meta_usage(lower: Mapping[str, str], now_us: int) -> tuple[float | None, int | None]:
    """The highest usage percent of X-App-Usage and X-Business-Use-Case-Usage, and the
    time BUC says access comes back (when it says minutes > 0)."""
    buckets: list[object] = [_json(lower.get("x-app-usage"))]
    business = _json(lower.get("x-business-use-case-usage"))
    if isinstance(business, dict):
        for entries in business.values():
            buckets += entries if isinstance(entries, list) else []
    percents: list[float] = []
    regain_min = 0.0
    for bucket in buckets:
        if isinstance(bucket, dict):
            percents += [v for v in map(_number, map(bucket.get, _META_PERCENTS)) if v is not None]
            regain_min = max(
                regain_min, _number(bucket.get("estimated_time_to_regain_access")) or 0
            )
    percent = max(percents) if percents else None
    regain_us = now_us + int(regain_min * 60 * US_PER_S) if regain_min > 0 else None
    return percent, regain_us


def _json(raw: str | None) -> object:
    try:
        return msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def backoff_s(attempt: int, *, base_s: float, cap_s: float, draw: float) -> float:
    """Full jitter: ``draw * min(cap_s, base_s * 2**attempt)``, ``draw`` uniform in [0, 1)."""
    if attempt < 0 or base_s < 0 or cap_s < 0 or not 0 <= draw < 1:
        raise ValueError("backoff needs attempt >= 0, base_s >= 0, cap_s >= 0, 0 <= draw < 1")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 1000))  # 2.0**1024 overflows
    return draw * ceiling


DEFAULT_CURVE: tuple[tuple[float, float], ...] = (
    (3600.0, 60.0),
    (86400.0, 300.0),
    (7 * 86400.0, 1800.0),
    (30 * 86400.0, 6 * 3600.0),
    (math.inf, 86400.0),
)


def poll_interval_s(
    age_s: float | None, curve: Sequence[tuple[float, float]] = DEFAULT_CURVE
) -> float:
    """Seconds until the next poll of content ``age_s`` old: the first ``(max_age, interval)``
    with ``age_s <= max_age``; unknown age counts as old, past the last entry its interval."""
    if not curve:
        raise ValueError("the poll curve is empty")
    age = math.inf if age_s is None or math.isnan(age_s) else max(age_s, 0.0)
    return next((interval for max_age, interval in curve if age <= max_age), curve[-1][1])


def parse_curve(raw: Any) -> tuple[tuple[float, float], ...]:
    """A curve from connector config ``[[max_age_s, interval_s], ...]`` (``null`` age: no limit).

    Raises ValueError naming the bad item: ages must be >= 0 and strictly increasing,
    intervals finite and > 0.
    """
    if not isinstance(raw, list | tuple) or not raw:
        raise ValueError("the poll curve must be a non-empty list of [max_age_s, interval_s]")
    curve: list[tuple[float, float]] = []
    for index, item in enumerate(raw):
        where = f"poll curve item {index} ({item!r})"
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValueError(f"{where}: expected [max_age_s, interval_s]")
        max_age = math.inf if item[0] is None or item[0] == math.inf else _number(item[0])
        interval = _number(item[1])
        if max_age is None or max_age < 0:
            raise ValueError(f"{where}: max_age_s must be a number >= 0, or null for no limit")
        if interval is None or interval <= 0:
            raise ValueError(f"{where}: interval_s must be a finite number > 0")
        if curve and max_age <= curve[-1][0]:
            raise ValueError(f"{where}: max_age_s must be greater than the item before")
        curve.append((max_age, interval))
    return tuple(curve)


def next_pacific_midnight_us(now_us: int) -> int:
    """The next midnight in America/Los_Angeles strictly after ``now_us`` (YouTube's reset)."""
    zone = ZoneInfo(_PACIFIC)
    local = (_EPOCH + dt.timedelta(microseconds=now_us)).astimezone(zone)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return (midnight - _EPOCH) // dt.timedelta(microseconds=1)


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
    value = _number(raw)
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
