"""Use cases of the registry: influencers, campaigns and content, per tenant.

Every process keeps each tenant's ``Directory`` (content and accounts to
influencers and campaigns) in memory for ingest. A change through this process
rebuilds its tenant's directory before answering, so the next event sees it;
other processes hear of it over the bus (``announce``) and reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from hypemeter.clock import Clock
from hypemeter.errors import Conflict, InvalidInput, NotFound
from hypemeter.events.model import Directory
from hypemeter.metrics.model import decode_id_cursor, encode_cursor
from hypemeter.registry.model import (
    CLAIM,
    Campaign,
    Content,
    Entity,
    Influencer,
    Kind,
    build_directory,
    claim_id,
    claim_record,
    duplicate_account,
    from_record,
    key_token,
    kind_of,
    rfc3339,
    to_record,
)
from hypemeter.registry.ports import RegistryStore

log = logging.getLogger("hypemeter.registry")
Announce = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Erasure:
    """An influencer to forget, with the ids of the accounts they had: what names them
    in data kept outside the events (a dead letter's raw delivery, say)."""

    tenant_id: str
    influencer_id: str
    account_ids: tuple[str, ...] = ()


# Erases what is kept of one influencer (events, rollups, dead letters naming them);
# returns how many events it erased.
Eraser = Callable[[Erasure], Awaitable[int]]


class RegistryService:
    def __init__(
        self,
        store: RegistryStore,
        clock: Clock,
        *,
        announce: Announce | None = None,
        eraser: Eraser | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._announce = announce
        self._eraser = eraser
        self._directories: dict[str, Directory] = {}
        # A reload (on another process's notice, or on ours) reads every tenant's
        # entities over several awaits: without this, one that started before a change
        # here could put back the directory from before it.
        self._rebuilding = asyncio.Lock()

    async def start(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        """Rebuild every tenant's directory from the store (start-up, and on notices)."""
        async with self._rebuilding:
            by_tenant: dict[str, list[Entity]] = {}
            for kind in Kind:
                for tenant_id, record in await self._store.all_entities(kind.value):
                    by_tenant.setdefault(tenant_id, []).append(from_record(record))
            directories = {}
            for tenant_id, entities in by_tenant.items():
                directory = build_directory(entities)
                if directory is not None:
                    directories[tenant_id] = directory
            self._directories = directories

    def directory(self, tenant_id: str) -> Directory | None:
        """What ingest resolves a tenant's events with; None while its registry is empty."""
        return self._directories.get(tenant_id)

    async def create(self, tenant_id: str, entity: Entity) -> Entity:
        """Store a new entity. Raises Conflict (its id, or an account, is taken) and
        InvalidInput (a reference to an entity that does not exist)."""
        await self._check(tenant_id, entity)
        now = rfc3339(self._clock.now_us())
        stamped = msgspec.structs.replace(entity, created_at=now, updated_at=now)
        kind = kind_of(entity)
        if isinstance(entity, Influencer):
            if await self._store.get_entity(tenant_id, kind.value, entity.id) is not None:
                raise Conflict(f"{kind.value} {entity.id!r} already exists", field="id")
            await self._claim(tenant_id, entity, keep=set())
        if not await self._store.insert_entity(tenant_id, to_record(stamped, self._clock.now_us())):
            if isinstance(entity, Influencer):
                await self._release(tenant_id, [claim_id(a) for a in entity.accounts], entity.id)
            raise Conflict(f"{kind.value} {entity.id!r} already exists", field="id")
        await self._changed(tenant_id)
        return stamped

    async def get(self, tenant_id: str, kind: Kind, entity_id: str) -> Entity:
        """The entity, or NotFound."""
        record = await self._store.get_entity(tenant_id, kind.value, entity_id)
        if record is None:
            raise NotFound(f"no {kind.value} {entity_id!r}", field="id")
        return from_record(record)

    async def update(
        self, tenant_id: str, kind: Kind, entity_id: str, changes: Mapping[str, Any]
    ) -> Entity:
        """Apply ``changes`` (field -> new value; None clears an optional field)."""
        current = await self.get(tenant_id, kind, entity_id)
        try:
            changed = msgspec.structs.replace(current, **changes)
        except TypeError as exc:
            raise InvalidInput(str(exc)) from exc
        await self._check(tenant_id, changed)
        stamped = msgspec.structs.replace(changed, updated_at=rfc3339(self._clock.now_us()))
        before = {claim_id(a) for a in getattr(current, "accounts", ())}
        after = {claim_id(a) for a in getattr(stamped, "accounts", ())}
        if isinstance(stamped, Influencer):
            await self._claim(tenant_id, stamped, keep=before)
        if not await self._store.update_entity(tenant_id, to_record(stamped, self._clock.now_us())):
            await self._release(tenant_id, sorted(after - before), entity_id)
            raise NotFound(f"no {kind.value} {entity_id!r}", field="id")
        await self._release(tenant_id, sorted(before - after), entity_id)
        await self._changed(tenant_id)
        return stamped

    async def delete(self, tenant_id: str, kind: Kind, entity_id: str, *, erase: bool) -> int:
        """Remove an entity; with ``erase`` (influencers only) also its events, rollups
        and the dead letters naming it. Returns how many events were erased."""
        if erase and (kind is not Kind.INFLUENCER or self._eraser is None):
            raise InvalidInput("erase applies to influencers only", field="erase")
        record = await self._store.get_entity(tenant_id, kind.value, entity_id)
        if record is None or not await self._store.delete_entity(tenant_id, kind.value, entity_id):
            raise NotFound(f"no {kind.value} {entity_id!r}", field="id")
        gone = from_record(record)
        accounts: tuple[str, ...] = ()
        if isinstance(gone, Influencer):
            await self._release(tenant_id, [claim_id(a) for a in gone.accounts], entity_id)
            accounts = tuple(a.account_id for a in gone.accounts)
        await self._changed(tenant_id)
        if erase and self._eraser is not None:
            erased = await self._eraser(Erasure(tenant_id, entity_id, accounts))
            log.info(
                "influencer erased",
                extra={"tenant": tenant_id, "influencer": entity_id, "events": erased},
            )
            return erased
        return 0

    async def list(
        self,
        tenant_id: str,
        kind: Kind,
        *,
        filters: Mapping[str, str],
        search: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Entity], str | None]:
        """A page of entities by id, and the cursor of the next page (None on the last)."""
        scope = f"registry:{kind.value}:{sorted(filters.items())}:{search}"
        after = decode_id_cursor(cursor, scope)
        records = await self._store.list_entities(
            tenant_id,
            kind.value,
            tokens=[key_token(name, value) for name, value in sorted(filters.items())],
            search=search.strip().lower() if search else None,
            after=after,
            limit=limit + 1,
        )
        page = [from_record(r) for r in records[:limit]]
        more = len(records) > limit
        return page, (encode_cursor(scope, [page[-1].id]) if more and page else None)

    async def _check(self, tenant_id: str, entity: Entity) -> None:
        if isinstance(entity, Influencer):
            await self._check_influencer(tenant_id, entity)
        elif isinstance(entity, Campaign):
            await self._require_all(tenant_id, Kind.INFLUENCER, entity.influencers, "influencers")
            if entity.start and entity.end and entity.end < entity.start:
                raise InvalidInput("end must not be before start", field="end")
        elif isinstance(entity, Content):
            await self._require_all(tenant_id, Kind.INFLUENCER, [entity.influencer_id], "")
            if entity.campaign_id is not None:
                await self._require_all(tenant_id, Kind.CAMPAIGN, [entity.campaign_id], "")

    async def _check_influencer(self, tenant_id: str, influencer: Influencer) -> None:
        twice = duplicate_account(influencer)
        if twice is not None:
            raise InvalidInput("an account is listed twice", field=f"accounts.{twice}")

    async def _claim(self, tenant_id: str, influencer: Influencer, *, keep: set[str]) -> None:
        """Claim each account of ``influencer`` for it, atomically in the store (one claim
        record per account); on a conflict, release what this call claimed and raise."""
        made: list[str] = []
        for index, account in enumerate(influencer.accounts):
            key = claim_id(account)
            if key in keep:
                continue
            record = claim_record(key, influencer.id, self._clock.now_us())
            if await self._store.insert_entity(tenant_id, record):
                made.append(key)
                continue
            held = await self._store.get_entity(tenant_id, CLAIM, key)
            if held is not None and held.doc == influencer.id:
                continue
            await self._release(tenant_id, made, influencer.id)
            owner = held.doc if held is not None else "another influencer"
            raise Conflict(
                f"{account.platform} account {account.account_id!r} belongs to "
                f"influencer {owner!r}",
                field=f"accounts.{index}",
            )

    async def _release(self, tenant_id: str, keys: Sequence[str], owner: str) -> None:
        for key in keys:
            held = await self._store.get_entity(tenant_id, CLAIM, key)
            if held is not None and held.doc == owner:
                await self._store.delete_entity(tenant_id, CLAIM, key)

    async def _require_all(
        self, tenant_id: str, kind: Kind, ids: Sequence[str], field: str
    ) -> None:
        for index, entity_id in enumerate(ids):
            if await self._store.get_entity(tenant_id, kind.value, entity_id) is None:
                name = f"{field}.{index}" if field else f"{kind.value}_id"
                raise InvalidInput(f"no {kind.value} {entity_id!r} in the registry", field=name)

    async def _changed(self, tenant_id: str) -> None:
        async with self._rebuilding:
            entities = [
                from_record(record)
                for kind in Kind
                for _, record in await self._store.all_entities(kind.value, tenant_id)
            ]
            directory = build_directory(entities)
            if directory is None:
                self._directories.pop(tenant_id, None)
            else:
                self._directories[tenant_id] = directory
        if self._announce is not None:
            await self._announce()
