"""Which connectors are polled, and what their polling looks like from outside.

``PollScheduler`` runs one ``ConnectorPoller`` task for every polling connector (a
connector of a polled platform, with credentials, enabled and not disabled by the
platform), follows connector changes (a poller that saved its own refreshed token
goes on; any other change restarts it), and shows each poller's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from hypemeter.clock import Clock
from hypemeter.connectors.model import Connector
from hypemeter.connectors.pollers import TICK_S, ConnectorPoller
from hypemeter.connectors.polling import POLLERS
from hypemeter.connectors.service import ConnectorService
from hypemeter.events.service import IngestService
from hypemeter.registry.model import rfc3339
from hypemeter.registry.service import RegistryService

log = logging.getLogger("hypemeter.pollers")


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
        token_urls: Mapping[str, str] | None = None,
    ) -> None:
        self._connectors = connectors
        self._registry = registry
        self._ingest = ingest
        self._clock = clock
        self._base_urls = dict(base_urls)
        self._token_urls = dict(token_urls or {})
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
        tokens = _tokens(poller)
        erred = health.last_error_us is not None and (
            health.last_success is None or health.last_error_us > health.last_success
        )
        return {
            "calls": health.calls,
            "calls_in_window": sum(c.used_in_window(now) for c in poller.credentials),
            "window_seconds": poller.credentials[0].limits.window_s,
            "quota_left": None if any(q is None for q in quotas) else sum(q or 0 for q in quotas),
            "paused_credentials": sum(c.paused_until_us > now for c in poller.credentials),
            "next_poll": _iso(health.next_poll_us),
            "last_success": _iso(health.last_success),
            "last_error": health.last_error,
            "last_error_detail": health.last_error_detail,
            "last_error_at": _iso(health.last_error_us),
            "failing": erred or (tokens is not None and tokens["refresh_error"] is not None),
            "tokens": tokens,
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
            if cid not in wanted or not poller.follows(wanted[cid][1]) or task.done():
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
            token_url=self._token_urls.get(connector.platform),
            save=self._connectors.update_credential,
        )
        task = asyncio.create_task(poller.run(self._stopping), name=f"poll-{cid}")
        self._running[cid] = (poller, task)


def _iso(us: int | None) -> str | None:
    """The time in RFC 3339; None for a time a datetime cannot hold (an expiry stored
    before such times were refused must not make the tenant's whole health a 500)."""
    if us is None:
        return None
    try:
        return rfc3339(us)
    except (OverflowError, ValueError):
        return None


def _tokens(poller: ConnectorPoller) -> dict[str, Any] | None:
    """The token side of a poller's health (None for platforms whose tokens do not expire)."""
    keeper = poller.keeper
    if keeper is None:
        return None
    health = keeper.health
    return {
        "expires_at": _iso(keeper.earliest_expiry_us(poller.credentials)),
        "last_refresh": _iso(health.last_refresh_us),
        "refresh_error": health.error,
        "refresh_error_detail": health.error_detail,
        "refresh_error_at": _iso(health.error_us),
    }
