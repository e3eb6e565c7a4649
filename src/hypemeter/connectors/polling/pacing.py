"""The arithmetic of calling a platform politely, one credential at a time.

Pure: no I/O and no clock; time comes in as ``now_us``. A ``Credential`` keeps its
platform's documented limits with a sliding window log of its calls (a hard cap), a
``TokenBucket`` (smooths bursts) and a daily unit quota where the platform has one
(YouTube's resets at ``next_pacific_midnight_us``); ``rate_signal`` reads when a
platform asks for a pause, ``backoff_s`` spaces retries, and ``poll_interval_s``
reschedules each target by its age.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from hypemeter.connectors.polling.model import US_PER_S, Limits, finite_number

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PACIFIC = "America/Los_Angeles"
WINDOW_MARGIN_US = 50_000  # clocks and queues between us and the platform


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
            percents += [
                v for v in map(finite_number, map(bucket.get, _META_PERCENTS)) if v is not None
            ]
            regain_min = max(
                regain_min, finite_number(bucket.get("estimated_time_to_regain_access")) or 0
            )
    percent = max(percents) if percents else None
    regain_us = now_us + int(regain_min * 60 * US_PER_S) if regain_min > 0 else None
    return percent, regain_us


def _json(raw: str | None) -> object:
    try:
        return msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        return None


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
        max_age = math.inf if item[0] is None or item[0] == math.inf else finite_number(item[0])
        interval = finite_number(item[1])
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


@dataclass(slots=True)
class Credential:
    """One credential's budget; mutated only by its connector's task."""

    secrets: Mapping[str, str]
    limits: Limits
    bucket: TokenBucket
    calls: deque[int] = field(default_factory=deque)  # times of the calls in the window
    paused_until_us: int = 0
    units_used: int = 0
    units_reset_us: int = 0

    def used_in_window(self, now_us: int) -> int:
        horizon = now_us - self.limits.window_s * US_PER_S
        while self.calls and self.calls[0] <= horizon:
            self.calls.popleft()
        return len(self.calls)

    def units_left(self, now_us: int) -> int | None:
        if self.limits.daily_units is None:
            return None
        if now_us >= self.units_reset_us:
            self.units_used = 0
            self.units_reset_us = next_pacific_midnight_us(now_us)
        return self.limits.daily_units - self.units_used

    def ready_at(self, now_us: int, cost: int) -> int:
        """When this credential may make a call of ``cost`` units (now_us if now)."""
        at = max(now_us, self.paused_until_us)
        left = self.units_left(now_us)
        if left is not None and left < cost:
            at = max(at, self.units_reset_us)
        if self.used_in_window(now_us) >= self.limits.window_calls:
            at = max(at, self.calls[0] + self.limits.window_s * US_PER_S + 1)
        return max(at, now_us + self.bucket.wait_us(now_us))

    def answered(self, now_us: int) -> None:
        """The last call's answer came: count the call from now (see ``PlatformCalls``)."""
        if self.calls:
            self.calls[-1] = max(self.calls[-1], now_us + WINDOW_MARGIN_US)

    def spend(self, now_us: int, cost: int) -> None:
        taken = self.bucket.take(now_us)
        assert taken, "spend() follows ready_at() == now"
        self.calls.append(now_us)
        if self.limits.daily_units is not None:
            self.units_used += cost


LIMIT_FIELDS = ("capacity", "refill_per_s", "window_s", "window_calls", "daily_units")


def connector_limits(documented: Limits, poll: Mapping[str, Any]) -> Limits:
    """The documented limits, or a connector's own (a negotiated or a lower quota)."""
    return dataclasses.replace(documented, **{k: poll[k] for k in LIMIT_FIELDS if k in poll})
