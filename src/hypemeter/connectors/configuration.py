"""The connectors' configuration, held in memory for every tenant.

Every process keeps the connectors of all tenants in memory (webhooks name a
connector, not a tenant) and reloads them on configuration notices, like keys. A
disabled connector (the platform revoked our access) refuses every request with 410.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec

from hypemeter.clock import Clock
from hypemeter.connectors.model import (
    CONNECTOR,
    Connector,
    Health,
    check_polling,
    connector_of,
    connector_record,
    missing_secrets,
    new_connector_id,
    with_expiry_times,
)
from hypemeter.connectors.ports import ConnectorDocuments
from hypemeter.connectors.webhooks import ADAPTERS
from hypemeter.errors import Conflict, Gone, InvalidInput, NotFound
from hypemeter.registry.model import rfc3339

log = logging.getLogger("hypemeter.connectors")
Announce = Callable[[], Awaitable[None]]
MISS_RELOAD_US = 1_000_000


class ConnectorConfiguration:
    """Creates, finds, updates and deletes connectors; their health as last noted."""

    def __init__(
        self,
        store: ConnectorDocuments,
        clock: Clock,
        *,
        announce: Announce | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._announce = announce
        self._connectors: dict[str, tuple[str, Connector]] = {}  # id -> (tenant, connector)
        self._health: dict[str, Health] = {}
        self._missed_reload_us = 0
        # Held by a reload and by each change of the store with its change of the map:
        # a reload that read the store before a change cannot undo it afterwards.
        self._reloading = asyncio.Lock()
        self.refused: Counter[tuple[str, str]] = Counter()  # (platform, reason) -> requests

    async def start(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        async with self._reloading:
            found = {}
            for tenant_id, record in await self._store.all_entities(CONNECTOR):
                found[record.entity_id] = (tenant_id, connector_of(record))
            self._connectors = found

    async def create(
        self,
        tenant_id: str,
        platform: str,
        secrets: Mapping[str, str],
        *,
        credentials: Sequence[Mapping[str, Any]] = (),
        poll: Mapping[str, Any] | None = None,
    ) -> Connector:
        if platform not in ADAPTERS:
            allowed = ", ".join(ADAPTERS)
            raise InvalidInput(
                f"unknown platform {platform!r}; allowed: {allowed}", field="platform"
            )
        missing = missing_secrets(platform, secrets)
        if missing:
            raise InvalidInput(
                f"{platform} connectors need the secrets {', '.join(missing)}",
                field=f"secrets.{missing[0]}",
            )
        check_polling(platform, credentials, poll or {})
        now_us = self._clock.now_us()
        connector = Connector(
            id=new_connector_id(),
            platform=platform,
            secrets=dict(secrets),
            credentials=tuple(with_expiry_times(c, now_us) for c in credentials),
            poll=dict(poll or {}),
            created_at=rfc3339(self._clock.now_us()),
        )
        async with self._reloading:
            if not await self._store.insert_entity(
                tenant_id, connector_record(connector, self._clock.now_us())
            ):
                raise Conflict("connector id collision; try again", field="id")
            self._connectors[connector.id] = (tenant_id, connector)
        await self._changed()
        return connector

    async def connectors(self, tenant_id: str) -> list[tuple[Connector, Health]]:
        records = await self._store.list_entities(
            tenant_id, CONNECTOR, tokens=[], search=None, after=None, limit=10_000
        )
        connectors = [connector_of(r) for r in records]
        return [(c, self.health(c.id)) for c in connectors]

    async def delete(self, tenant_id: str, connector_id: str) -> None:
        async with self._reloading:
            if not await self._store.delete_entity(tenant_id, CONNECTOR, connector_id):
                raise NotFound(f"no connector {connector_id!r}", field="id")
            self._connectors.pop(connector_id, None)
        await self._changed()

    async def require(self, platform: str, connector_id: str) -> tuple[str, Connector]:
        """The tenant and connector a webhook URL names; NotFound otherwise (another
        process may have made it a moment ago: the store is asked again, at most once
        a second)."""
        found = self._connectors.get(connector_id)
        now = self._clock.now_us()
        if found is None and now - self._missed_reload_us >= MISS_RELOAD_US:
            # At most once a second: unknown ids must not make every request a scan.
            self._missed_reload_us = now
            await self.reload()
            found = self._connectors.get(connector_id)
        if found is None or found[1].platform != platform:
            raise NotFound(f"no {platform} connector {connector_id!r}", field="connector_id")
        return found

    async def require_active(self, platform: str, connector_id: str) -> tuple[str, Connector]:
        """As ``require``; Gone when the platform revoked the connector's access (the
        reason shows to the tenant's admins, not to whoever calls the webhook URL)."""
        tenant_id, connector = await self.require(platform, connector_id)
        if connector.disabled is not None:
            self.refused[(platform, "disabled")] += 1
            raise Gone(
                f"the {platform} connector {connector_id!r} is disabled; it takes no requests",
                field="connector_id",
            )
        return tenant_id, connector

    def all_connectors(self) -> list[tuple[str, Connector]]:
        """Every tenant's connectors, as (tenant, connector), from memory."""
        return list(self._connectors.values())

    def health(self, connector_id: str) -> Health:
        return self._health.get(connector_id, Health())

    async def update_credential(
        self,
        tenant_id: str,
        connector_id: str,
        index: int,
        old: Mapping[str, str],
        new: Mapping[str, str],
    ) -> Connector | None:
        """Replace credential ``index`` of a connector, as ``old``, by ``new`` (a refreshed
        token) in the store and in memory; the connector saved, or None when the
        connector is gone or its credential changed meanwhile (nothing is written).
        Raises what the store raises (StoreUnavailable...)."""
        async with self._reloading:
            found = self._connectors.get(connector_id)
            if found is None or found[0] != tenant_id:
                return None
            connector = found[1]
            credentials = list(connector.credentials)
            if index >= len(credentials) or dict(credentials[index]) != dict(old):
                return None
            credentials[index] = dict(new)
            updated = msgspec.structs.replace(connector, credentials=tuple(credentials))
            record = connector_record(updated, self._clock.now_us())
            if not await self._store.update_entity(tenant_id, record):
                return None
            self._connectors[connector_id] = (tenant_id, updated)
        await self._changed()
        return updated

    async def _disable(self, tenant_id: str, connector: Connector, reason: str) -> None:
        disabled = msgspec.structs.replace(connector, disabled=reason)
        async with self._reloading:
            record = connector_record(disabled, self._clock.now_us())
            await self._store.update_entity(tenant_id, record)
            self._connectors[connector.id] = (tenant_id, disabled)
        log.warning("connector disabled by the platform", extra={"connector": connector.id})
        await self._changed()

    async def _changed(self) -> None:
        if self._announce is not None:
            await self._announce()
