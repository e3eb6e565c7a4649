"""YouTube push: subscribing to the channels' feeds at the WebSub hub, and renewing.

For every YouTube connector, each channel of the tenant's influencers (their
YouTube accounts in the registry) is a topic. The subscriber asks the hub for
each topic (``hub.mode=subscribe`` with the connector's callback URL, the lease
it wants and the connector's ``hub_secret``), and asks again once 80% of the
lease has passed, so a subscription never lapses. The hub confirms by calling
the callback (``GET ?hub.challenge``): every process, this subscriber running or
not, answers only for the connector's own topics (verification of intent, see
``webhooks.youtube.intends``), and the lease the hub grants there replaces the
one asked for. Failed requests are retried on the next round with growing,
jittered delays. It needs ``HYPEMETER_PUBLIC_URL``, the address at which the
platforms reach this server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

import httpx

from hypemeter.clock import Clock
from hypemeter.connectors.model import Connector, callback_url
from hypemeter.connectors.polling import backoff_s
from hypemeter.connectors.service import ConnectorService
from hypemeter.connectors.webhooks.youtube import topic_for
from hypemeter.registry.model import Influencer, Kind
from hypemeter.registry.service import RegistryService

log = logging.getLogger("hypemeter.websub")
US = 1_000_000
TICK_S = 0.5
RENEW_SHARE = 0.8


@dataclass(slots=True)
class Lease:
    requested_us: int
    lease_s: int
    confirmed: bool = False
    failures: int = 0
    retry_us: int = 0

    def renew_at_us(self) -> int:
        return self.requested_us + int(self.lease_s * RENEW_SHARE * US)


class WebSubSubscriber:
    def __init__(
        self,
        connectors: ConnectorService,
        registry: RegistryService,
        clock: Clock,
        *,
        hub_url: str,
        public_url: str,
        lease_s: int,
    ) -> None:
        self._connectors = connectors
        self._registry = registry
        self._clock = clock
        self._hub = hub_url
        self._public = public_url.rstrip("/")
        self._lease_s = lease_s
        self._leases: dict[tuple[str, str], Lease] = {}  # (connector id, topic) -> lease
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        connectors.verified = self.confirmed

    def confirmed(self, connector_id: str, topic: str, lease_s: int | None) -> None:
        """The hub verified a subscription the connector wants: if this process asked
        for it, note it confirmed, with the lease the hub granted."""
        lease = self._leases.get((connector_id, topic))
        if lease is None:
            return
        lease.confirmed = True
        if lease_s is not None and lease_s > 0:
            lease.lease_s = lease_s

    def status(self, connector_id: str) -> dict[str, object] | None:
        mine = [(t, lease) for (c, t), lease in self._leases.items() if c == connector_id]
        if not mine:
            return None
        return {
            "topics": len(mine),
            "confirmed": sum(lease.confirmed for _, lease in mine),
            "next_renewal_us": min(lease.renew_at_us() for _, lease in mine),
        }

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
        self._task = asyncio.create_task(self._run(), name="websub")

    async def aclose(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.round()
            except Exception:
                log.exception("a WebSub round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TICK_S)

    async def round(self) -> None:
        """(Re)subscribe every topic that is new or due for renewal."""
        now = self._clock.now_us()
        wanted = await self._wanted()
        for key in [k for k in self._leases if k not in wanted]:
            del self._leases[key]
        for (connector_id, topic), connector in wanted.items():
            lease = self._leases.get((connector_id, topic))
            if lease is not None and now < max(lease.renew_at_us(), lease.retry_us):
                continue
            await self._subscribe(connector, topic, lease, now)

    async def _wanted(self) -> dict[tuple[str, str], Connector]:
        wanted: dict[tuple[str, str], Connector] = {}
        for tenant_id, connector in self._connectors.all_connectors():
            if connector.platform != "youtube" or connector.disabled is not None:
                continue
            for channel in await self._channels(tenant_id):
                wanted[(connector.id, topic_for(channel))] = connector
        return wanted

    async def _channels(self, tenant_id: str) -> list[str]:
        channels: list[str] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._registry.list(
                tenant_id,
                Kind.INFLUENCER,
                filters={"platform": "youtube"},
                search=None,
                cursor=cursor,
                limit=500,
            )
            for influencer in page:
                assert isinstance(influencer, Influencer)
                channels += [a.account_id for a in influencer.accounts if a.platform == "youtube"]
            if cursor is None:
                return channels

    async def _subscribe(
        self, connector: Connector, topic: str, lease: Lease | None, now_us: int
    ) -> None:
        assert self._http is not None
        form = {
            "hub.callback": self._public + callback_url(connector),
            "hub.mode": "subscribe",
            "hub.topic": topic,
            "hub.verify": "async",
            "hub.lease_seconds": str(self._lease_s),
            "hub.secret": connector.secrets["hub_secret"],
        }
        # A renewal keeps the subscription confirmed until the hub says otherwise.
        fresh = Lease(now_us, self._lease_s, confirmed=lease is not None and lease.confirmed)
        # Noted before the request: the hub may verify before it answers.
        self._leases[(connector.id, topic)] = fresh
        try:
            response = await self._http.post(self._hub, data=form)
            ok = response.status_code in (202, 204)
            problem = f"hub answered {response.status_code}"
        except httpx.HTTPError as exc:
            ok, problem = False, f"hub unreachable: {exc}"
        if ok:
            return
        failures = (lease.failures if lease is not None else 0) + 1
        delay_s = backoff_s(failures, base_s=1.0, cap_s=3600.0, draw=random.random())
        fresh.failures = failures
        fresh.retry_us = now_us + int(delay_s * US)
        fresh.requested_us = now_us - int(self._lease_s * RENEW_SHARE * US)  # still due
        log.warning("WebSub subscription failed", extra={"topic": topic, "error": problem})
