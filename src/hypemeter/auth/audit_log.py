"""Use cases of the audit log: record an action, read a tenant's entries, purge old ones."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
from dataclasses import dataclass

from hypemeter.auth.audit import (
    LOCAL,
    Action,
    AuditEntry,
    AuditQuery,
    AuditStore,
    check_limit,
    clip,
    clip_fields,
    new_entry_id,
)
from hypemeter.clock import Clock
from hypemeter.errors import HypemeterError
from hypemeter.metrics.model import decode_id_cursor, encode_cursor

log = logging.getLogger("hypemeter.audit")
DAY_US = 86_400 * 1_000_000
PURGE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: str | None


def cli_actor() -> str:
    """Who acts from the command line: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class AuditLog:
    """Records audited actions in the store and keeps them ``retention_days``."""

    def __init__(self, store: AuditStore, clock: Clock, *, retention_days: int) -> None:
        self._store = store
        self._clock = clock
        self._retention_us = retention_days * DAY_US
        self._purger: asyncio.Task[None] | None = None

    async def start(self, *, purge: bool = True) -> None:
        """Open the store; with ``purge``, also delete expired entries now and hourly."""
        await self._store.start()
        if purge:
            self._purger = asyncio.create_task(self._purge_loop(), name="hypemeter-audit-purge")

    async def aclose(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        await self._store.aclose()

    async def record(
        self,
        tenant_id: str,
        key_id: str,
        action: Action,
        *,
        status: int,
        ip: str,
        fields: tuple[str, ...] = (),
    ) -> AuditEntry:
        """Store one entry; raises StoreUnavailable when the store cannot take it."""
        now = self._clock.now_us()
        entry = AuditEntry(
            entry_id=new_entry_id(now),
            tenant_id=tenant_id,
            at_us=now,
            key_id=clip(key_id),
            action=action.name,
            target_type=action.target_type,
            target_id=action.target_id,
            status=status,
            ip=clip(ip),
            fields=clip_fields(fields),
        )
        await self._store.append(entry)
        return entry

    async def record_local(self, tenant_id: str, action: Action, *, status: int = 200) -> None:
        """An action of the command line (directly or through the control socket)."""
        await self.record(tenant_id, cli_actor(), action, status=status, ip=LOCAL)

    async def page(self, query: AuditQuery, cursor: str | None) -> AuditPage:
        """One page of the tenant's entries, newest first."""
        check_limit(query.limit)
        scope = f"audit:{query.tenant_id}:{query.since_us}:{query.key_id}:{query.action}"
        before = decode_id_cursor(cursor, scope)
        wanted = AuditQuery(
            query.tenant_id,
            since_us=query.since_us,
            key_id=query.key_id,
            action=query.action,
            before=before,
            limit=query.limit + 1,
        )
        rows = await self._store.list_entries(wanted)
        page = rows[: query.limit]
        more = len(rows) > query.limit
        return AuditPage(page, encode_cursor(scope, [page[-1].entry_id]) if more else None)

    async def purge(self) -> int:
        """Delete the entries past the retention; returns how many."""
        return await self._store.purge(self._clock.now_us() - self._retention_us)

    async def _purge_loop(self) -> None:
        while True:
            try:
                purged = await self.purge()
                if purged:
                    log.info("audit entries purged", extra={"entries": purged})
            except HypemeterError as exc:
                log.warning("audit purge failed: %s", exc.message)
            await asyncio.sleep(PURGE_EVERY_S)
