"""What the scheduler shows of a poller: an expiry stored before out-of-range times were
refused shows as unknown, never as an error for the tenant's whole health."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from hypemeter.clock import FixedClock
from hypemeter.connectors.model import Connector
from hypemeter.connectors.scheduler import PollScheduler
from hypemeter.connectors.service import ConnectorService
from hypemeter.events.service import IngestService
from hypemeter.registry.service import RegistryService

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z


class Connectors:
    """The one connector the scheduler follows."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def all_connectors(self) -> list[tuple[str, Connector]]:
        return [("acme", self.connector)]

    async def update_credential(
        self, tenant: str, cid: str, index: int, old: Mapping[str, str], new: Mapping[str, str]
    ) -> Connector | None:
        raise AssertionError("nothing is refreshed here")


class Registry:
    """A tenant with no content: the poller has nothing to call."""

    def directory(self, tenant_id: str) -> None:
        return None

    async def list(self, *args: Any, **kwargs: Any) -> tuple[list[Any], None]:
        return [], None


async def test_an_expiry_no_datetime_holds_shows_as_unknown() -> None:
    connector = Connector(
        id="con_1",
        platform="instagram",
        secrets={"app_secret": "s", "verify_token": "v"},
        credentials=({"access_token": "a", "expires_at": "9999-12-31T23:59:59-01:00"},),
    )
    scheduler = PollScheduler(
        cast(ConnectorService, Connectors(connector)),
        cast(RegistryService, Registry()),
        cast(IngestService, None),
        FixedClock(NOW_US),
        base_urls={"instagram": "http://127.0.0.1:9"},
        backoff=(1.0, 1.0),
        token_urls={"instagram": "http://127.0.0.1:9"},
    )
    await scheduler.start()
    try:
        for _ in range(100):  # the scheduler starts the poller on its first pass
            if scheduler.status("con_1") is not None:
                break
            await asyncio.sleep(0.01)
        status = scheduler.status("con_1")
    finally:
        await scheduler.aclose()
    assert status is not None
    assert status["tokens"]["expires_at"] is None
    assert status["tokens"]["refresh_error"] is None and status["failing"] is False
