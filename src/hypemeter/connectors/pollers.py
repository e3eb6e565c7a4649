"""Polling the platforms for the counters of tracked content.

One task per polling connector (a connector of a polled platform with
credentials). Each round it takes the tenant's content of that platform from the
registry, polls what is due on the adaptive schedule (fresh posts often, old ones
rarely), and stores every counter read as a snapshot, so deltas follow and a
repeated poll never double counts.

Calls are spread over the connector's credentials. Each credential keeps within
its platform's documented limit: a sliding window log of its calls (a hard cap:
never more than the limit in any window), a token bucket (smooths bursts), a
daily unit quota where the platform has one (YouTube, reset at midnight Pacific),
and a pause whenever the platform says so (Retry-After, usage headers at 100%,
remaining 0 until the reset). 5xx answers and network errors are retried with
exponential backoff and full jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from hypemeter.clock import Clock
from hypemeter.connectors.model import Connector
from hypemeter.connectors.polling import (
    POLLERS,
    Call,
    Limits,
    PlatformPoller,
    PollError,
    Reading,
    Target,
    TokenBucket,
    next_pacific_midnight_us,
    parse_curve,
    poll_interval_s,
    rate_signal,
)
from hypemeter.connectors.service import ConnectorService
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.events.service import IngestService
from hypemeter.registry.model import Content, Kind, rfc3339
from hypemeter.registry.service import RegistryService

log = logging.getLogger("hypemeter.pollers")
US = 1_000_000
TICK_S = 0.5
TARGETS_REFRESH_S = 5.0
ATTEMPTS = 5
WINDOW_MARGIN_US = 50_000  # clocks and queues between us and the platform


class Transient(Exception):
    """A 5xx answer or a network error: worth retrying after a pause."""


class Throttled(Exception):
    """The platform asked us to slow down; the credential is paused."""


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
        horizon = now_us - self.limits.window_s * US
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
            at = max(at, self.calls[0] + self.limits.window_s * US + 1)
        return max(at, now_us + self.bucket.wait_us(now_us))

    def answered(self, now_us: int) -> None:
        """The last call's answer came: count the call from now (see ``_send``)."""
        if self.calls:
            self.calls[-1] = max(self.calls[-1], now_us + WINDOW_MARGIN_US)

    def spend(self, now_us: int, cost: int) -> None:
        taken = self.bucket.take(now_us)
        assert taken, "spend() follows ready_at() == now"
        self.calls.append(now_us)
        if self.limits.daily_units is not None:
            self.units_used += cost


@dataclass(slots=True)
class PollHealth:
    last_success: int | None = None
    last_error: str | None = None
    last_error_us: int | None = None
    next_poll_us: int | None = None
    calls: int = 0


class ConnectorPoller:
    """The polling of one connector."""

    def __init__(
        self,
        tenant_id: str,
        connector: Connector,
        poller: PlatformPoller,
        *,
        base_url: str,
        http: httpx.AsyncClient,
        registry: RegistryService,
        ingest: IngestService,
        clock: Clock,
        backoff: tuple[float, float],
    ) -> None:
        self.tenant_id = tenant_id
        self.connector = connector
        self._poller = poller
        self._base = base_url
        self._http = http
        self._registry = registry
        self._ingest = ingest
        self._clock = clock
        self._backoff = backoff
        limits = _limits(poller.limits, connector.poll)
        self._curve = parse_curve(connector.poll["curve"]) if "curve" in connector.poll else None
        now = clock.now_us()
        self.credentials = [
            Credential(
                dict(secrets),
                limits,
                TokenBucket(limits.capacity, limits.refill_per_s, float(limits.capacity), now),
            )
            for secrets in connector.credentials
        ]
        self._next = 0
        self._due: dict[str, int] = {}
        self._targets: list[Target] = []
        self._targets_at = 0
        self.health = PollHealth()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad round must not end the polling
                log.exception("a polling round failed", extra={"connector": self.connector.id})
                self._failed(f"round failed: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), TICK_S)

    async def round(self) -> None:
        """Poll whatever is due now."""
        now = self._clock.now_us()
        if now - self._targets_at >= TARGETS_REFRESH_S * US:
            self._targets = await self._load_targets()
            self._targets_at = now
        due = [t for t in self._targets if self._due.get(t.content_id, 0) <= now]
        for start in range(0, len(due), self._poller.batch):
            batch = due[start : start + self._poller.batch]
            await self._poll(batch)
        upcoming = [self._due.get(t.content_id, now) for t in self._targets]
        self.health.next_poll_us = min(upcoming) if upcoming else None

    async def _load_targets(self) -> list[Target]:
        platform = self._poller.platform
        directory = self._registry.directory(self.tenant_id)
        accounts: dict[str, str] = {}  # influencer -> their account on this platform
        if directory is not None:
            for (on, account), influencer in directory.accounts.items():
                if on == platform:
                    accounts.setdefault(influencer, account)
        targets: list[Target] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._registry.list(
                self.tenant_id,
                Kind.CONTENT,
                filters={"platform": platform},
                search=None,
                cursor=cursor,
                limit=500,
            )
            for item in page:
                assert isinstance(item, Content)
                published = _us(item.published_at) if item.published_at else None
                owner = accounts.get(item.influencer_id)
                targets.append(Target(item.id, published_us=published, account_id=owner))
            if cursor is None:
                return targets

    async def _poll(self, batch: Sequence[Target]) -> None:
        """Make the batch's calls (YouTube: videos, then channels), each with the next
        credential that can afford it, storing each call's readings as they come."""
        planned = self._poller.calls(batch, self.credentials[0].secrets)
        for index, plan in enumerate(planned):
            credential = await self._credential(plan.cost)
            call = self._poller.calls(batch, credential.secrets)[index]
            try:
                readings = await self._call(call, credential)
            except Throttled:
                return  # these targets stay due; another credential or a later round
            except (Transient, PollError, httpx.HTTPError) as exc:
                self._failed(str(exc))
                return
            await self._store(readings, self._clock.now_us())
        now = self._clock.now_us()
        for target in batch:
            self._due[target.content_id] = now + int(self._interval(target, now) * US)
        self.health.last_success = now

    async def _credential(self, cost: int) -> Credential:
        """The next credential (round robin) that may call now, waiting for the earliest."""
        now = self._clock.now_us()
        order = self.credentials[self._next :] + self.credentials[: self._next]
        ready = [(c.ready_at(now, cost), n, c) for n, c in enumerate(order)]
        _, _, chosen = min(ready, key=lambda r: (r[0], r[1]))
        self._next = (self.credentials.index(chosen) + 1) % len(self.credentials)
        await self._ready(chosen, cost)
        return chosen

    async def _call(self, call: Call, credential: Credential) -> list[Reading]:
        base, cap = self._backoff
        retrying = AsyncRetrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_random_exponential(multiplier=base, max=cap),
            retry=retry_if_exception_type(Transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(call, credential)
        raise AssertionError("unreachable")

    async def _ready(self, credential: Credential, cost: int) -> None:
        """Wait until ``credential`` may make a call of ``cost`` units."""
        for _ in range(10_000):
            now = self._clock.now_us()
            at = credential.ready_at(now, cost)
            if at <= now:
                return
            await asyncio.sleep(min((at - now) / US, 60.0))
        raise Throttled()

    async def _send(self, call: Call, credential: Credential) -> list[Reading]:
        await self._ready(credential, call.cost)
        credential.spend(self._clock.now_us(), call.cost)
        self.health.calls += 1
        try:
            response = await self._http.request(
                call.method,
                self._base + call.path,
                params=list(call.params),
                json=call.json,
                headers=dict(call.headers),
            )
        except httpx.TransportError as exc:
            self._failed(f"{self._poller.platform} unreachable: {exc}")
            raise Transient(f"{self._poller.platform} unreachable: {exc}") from exc
        now = self._clock.now_us()
        # The platform counted the call when it arrived, at the latest now: the window
        # log keeps the later time, so no window of the platform's holds one too many.
        credential.answered(now)
        headers = {k.lower(): v for k, v in response.headers.items()}
        signal = rate_signal(response.status_code, headers, now)
        if signal.pause_until_us is not None:
            credential.paused_until_us = max(credential.paused_until_us, signal.pause_until_us)
        if response.status_code == 429:
            if signal.pause_until_us is None:
                self._failed(f"{self._poller.platform} answered 429 without a reset time")
                raise Transient(f"{self._poller.platform} answered 429 without a reset time")
            self._failed(f"throttled until {signal.pause_until_us}: {signal.reason}")
            raise Throttled()
        if response.status_code >= 500:
            self._failed(f"{self._poller.platform} answered {response.status_code}")
            raise Transient(f"{self._poller.platform} answered {response.status_code}")
        if response.status_code >= 400:
            raise PollError(
                f"{self._poller.platform} answered {response.status_code}: {response.text[:200]}"
            )
        answer = self._poller.read(call, response.status_code, response.content)
        for problem in answer.problems:
            self._failed(problem)
        return list(answer.readings)

    async def _store(self, readings: Sequence[Reading], now_us: int) -> None:
        platform = self._poller.platform
        events = [
            EventIn(
                event_id=f"poll:{platform}:{r.content_id or r.account_id}:{r.metric}:{now_us}",
                platform=platform,
                metric=r.metric,
                value=r.value,
                kind="snapshot",
                ts=from_epoch_us(now_us),
                content_id=r.content_id,
                account_id=r.account_id,
            )
            for r in readings
        ]
        if events:
            result = await self._ingest.ingest_events(self.tenant_id, events)
            for rejection in result.rejected:
                self._failed(f"reading {events[rejection.index].event_id}: {rejection.error}")

    def _interval(self, target: Target, now_us: int) -> float:
        age = None if target.published_us is None else (now_us - target.published_us) / US
        age_s = float("inf") if age is None else max(age, 0.0)
        if self._curve is not None:
            return poll_interval_s(age_s, self._curve)
        return poll_interval_s(age_s)

    def _failed(self, reason: str) -> None:
        self.health.last_error = reason[:300]
        self.health.last_error_us = self._clock.now_us()


LIMIT_FIELDS = ("capacity", "refill_per_s", "window_s", "window_calls", "daily_units")


def _limits(documented: Limits, poll: Mapping[str, Any]) -> Limits:
    """The documented limits, or a connector's own (a negotiated or a lower quota)."""
    return dataclasses.replace(documented, **{k: poll[k] for k in LIMIT_FIELDS if k in poll})


def _us(moment: str) -> int:
    return to_epoch_us(dt.datetime.fromisoformat(moment))


def _iso(us: int | None) -> str | None:
    return None if us is None else rfc3339(us)


class PollScheduler:
    """Runs a ConnectorPoller for every polling connector; follows connector changes."""

    def __init__(
        self,
        connectors: ConnectorService,
        registry: RegistryService,
        ingest: IngestService,
        clock: Clock,
        *,
        base_urls: Mapping[str, str],
        backoff: tuple[float, float],
    ) -> None:
        self._connectors = connectors
        self._registry = registry
        self._ingest = ingest
        self._clock = clock
        self._base_urls = dict(base_urls)
        self._backoff = backoff
        self._running: dict[str, tuple[ConnectorPoller, asyncio.Task[None]]] = {}
        self._broken: dict[str, Connector] = {}  # connectors whose poller could not be built
        self._http: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def status(self, connector_id: str) -> dict[str, Any] | None:
        """The polling side of a connector's health, or None when it is not polled here."""
        running = self._running.get(connector_id)
        if running is None:
            return None
        poller = running[0]
        now = self._clock.now_us()
        quotas = [c.units_left(now) for c in poller.credentials]
        health = poller.health
        return {
            "calls": health.calls,
            "calls_in_window": sum(c.used_in_window(now) for c in poller.credentials),
            "window_seconds": poller.credentials[0].limits.window_s,
            "quota_left": None if any(q is None for q in quotas) else sum(q or 0 for q in quotas),
            "paused_credentials": sum(c.paused_until_us > now for c in poller.credentials),
            "next_poll": _iso(health.next_poll_us),
            "last_success": _iso(health.last_success),
            "last_error": health.last_error,
            "last_error_at": _iso(health.last_error_us),
        }

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
        self._task = asyncio.create_task(self._follow(), name="pollers")

    async def aclose(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        for _, task in self._running.values():
            task.cancel()
        await asyncio.gather(*(t for _, t in self._running.values()), return_exceptions=True)
        self._running.clear()
        if self._http is not None:
            await self._http.aclose()

    async def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                self._reconcile()
            except Exception:  # the next tick tries again; polling goes on meanwhile
                log.exception("following the connectors failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TICK_S)

    def _reconcile(self) -> None:
        wanted = {
            c.id: (tenant, c)
            for tenant, c in self._connectors.all_connectors()
            if c.platform in POLLERS
            and c.credentials
            and c.disabled is None
            and c.poll.get("enabled", True)
        }
        for cid in list(self._running):
            poller, task = self._running[cid]
            if cid not in wanted or wanted[cid][1] != poller.connector or task.done():
                task.cancel()
                del self._running[cid]
        assert self._http is not None
        for cid, (tenant, connector) in wanted.items():
            if cid in self._running or self._broken.get(cid) == connector:
                continue
            try:
                self._start(cid, tenant, connector)
            except Exception:  # a connector that cannot poll must not stop the others
                log.exception("cannot poll a connector", extra={"connector": cid})
                self._broken[cid] = connector

    def _start(self, cid: str, tenant: str, connector: Connector) -> None:
        assert self._http is not None
        poller = ConnectorPoller(
            tenant,
            connector,
            POLLERS[connector.platform],
            base_url=self._base_urls[connector.platform],
            http=self._http,
            registry=self._registry,
            ingest=self._ingest,
            clock=self._clock,
            backoff=self._backoff,
        )
        task = asyncio.create_task(poller.run(self._stopping), name=f"poll-{cid}")
        self._running[cid] = (poller, task)
