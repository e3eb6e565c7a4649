"""Polling the platforms for the counters of tracked content.

A ``ConnectorPoller`` polls one connector, as one task (``scheduler`` runs one
for every polling connector). Each round it takes the tenant's content of that platform from the
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

Credentials travel in request headers, never in URLs. Tokens that expire
(Instagram long-lived tokens, TikTok user tokens) are refreshed before they do,
at the start of a round (``refresh.TokenKeeper``), and saved through the
connector service. What a platform says in an error body is kept apart from the
reason in Hypemeter's words: the health shows it to admin keys only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import httpx
import msgspec

from hypemeter.clock import Clock
from hypemeter.connectors.calls import PlatformCalls, PollHealth, Throttled, Transient
from hypemeter.connectors.model import Connector
from hypemeter.connectors.polling import (
    Credential,
    PlatformPoller,
    PollError,
    Reading,
    Target,
    TokenBucket,
    connector_limits,
    parse_curve,
    poll_interval_s,
)
from hypemeter.connectors.polling.tokens import REFRESHERS
from hypemeter.connectors.refresh import TokenKeeper
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.events.service import IngestService
from hypemeter.registry.model import Content, Kind
from hypemeter.registry.service import RegistryService

log = logging.getLogger("hypemeter.pollers")
US = 1_000_000
TICK_S = 0.5
TARGETS_REFRESH_S = 5.0
# (tenant, connector id, credential index, as stored, as refreshed) -> the connector saved
SaveCredential = Callable[
    [str, str, int, Mapping[str, str], Mapping[str, str]], Awaitable[Connector | None]
]


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
        token_url: str | None = None,
        save: SaveCredential | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.connector = connector
        self._poller = poller
        self._registry = registry
        self._ingest = ingest
        self._clock = clock
        limits = connector_limits(poller.limits, connector.poll)
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
        self._calls = PlatformCalls(
            poller, base_url=base_url, http=http, clock=clock, backoff=backoff, health=self.health
        )
        self._save = save
        refresher = REFRESHERS.get(connector.platform)
        self.keeper = (
            TokenKeeper(
                refresher,
                base_url=token_url,
                http=http,
                clock=clock,
                secrets=connector.secrets,
                save=self._save_credential,
            )
            if refresher is not None and token_url is not None and save is not None
            else None
        )

    def follows(self, connector: Connector) -> bool:
        """Whether ``connector`` (as stored) is the one this poller runs: the same
        settings, and each credential as it polls now, or as it was before a refresh
        not saved yet. Adopts it if so (a refresh it saved itself changes nothing)."""
        if len(connector.credentials) != len(self.credentials):
            return False
        if msgspec.structs.replace(connector, credentials=()) != msgspec.structs.replace(
            self.connector, credentials=()
        ):
            return False
        unsaved = self.keeper.unsaved if self.keeper is not None else {}
        for index, stored in enumerate(connector.credentials):
            known = [self.credentials[index].secrets]
            if index in unsaved:
                known.append(unsaved[index][0])
            if all(dict(stored) != dict(k) for k in known):
                return False
        self.connector = connector
        return True

    async def _save_credential(
        self, index: int, old: Mapping[str, str], new: Mapping[str, str]
    ) -> None:
        assert self._save is not None
        saved = await self._save(self.tenant_id, self.connector.id, index, old, new)
        if saved is not None:
            self.connector = saved

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
        """Refresh the tokens that expire soon, then poll whatever is due now."""
        if self.keeper is not None:
            await self.keeper.keep(self.credentials)
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
                readings = await self._calls.call(call, credential)
            except Throttled:
                return  # these targets stay due; another credential or a later round
            except PollError as exc:
                self._failed(exc.reason, exc.upstream)
                return
            except (Transient, httpx.HTTPError) as exc:
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
        await self._calls.ready(chosen, cost)
        return chosen

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

    def _failed(self, reason: str, detail: str | None = None) -> None:
        self.health.failed(reason, detail, self._clock.now_us())


def _us(moment: str) -> int:
    return to_epoch_us(dt.datetime.fromisoformat(moment))
