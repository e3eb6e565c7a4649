"""AuditStore contract: entries kept per tenant, filtered, paged newest first, purged."""

from __future__ import annotations

from typing import Any

import pytest

from hypemeter.auth.audit import AuditEntry, AuditQuery, AuditStore
from hypemeter.backends.cluster.postgres_audit import PostgresAuditStore
from hypemeter.backends.embedded.duckdb_store.audit import DuckDBAuditStore

from .conftest import DuckDBBackend, StoreBackend

NOW_US = 1_795_183_200_000_000
MINUTE_US = 60_000_000


async def open_audit_store(backend: StoreBackend) -> AuditStore:
    """A started audit store on the backend's database (a second call: the same data)."""
    db: Any = backend._database(100_000)
    store: AuditStore = (
        DuckDBAuditStore(db) if isinstance(backend, DuckDBBackend) else PostgresAuditStore(db)
    )
    await store.start()
    backend._opened.append((store, db))
    return store


@pytest.fixture
async def audit_store(store_backend: StoreBackend) -> AuditStore:
    return await open_audit_store(store_backend)


def entry(
    n: int, *, tenant: str = "acme", key: str = "k1", action: str = "key.create"
) -> AuditEntry:
    at = NOW_US + n * MINUTE_US
    return AuditEntry(
        entry_id=f"{at:017d}-{n:08x}",
        tenant_id=tenant,
        at_us=at,
        key_id=key,
        action=action,
        target_type="key",
        target_id=f"target-{n}",
        status=201,
        ip="203.0.113.7",
        fields=("name", "scopes"),
    )


async def test_an_entry_reads_back_as_written(audit_store: AuditStore) -> None:
    await audit_store.append(entry(1))
    assert await audit_store.list_entries(AuditQuery("acme")) == [entry(1)]


async def test_entries_come_newest_first_and_never_another_tenants(
    audit_store: AuditStore,
) -> None:
    for n in range(5):
        await audit_store.append(entry(n))
    await audit_store.append(entry(9, tenant="globex"))
    listed = await audit_store.list_entries(AuditQuery("acme"))
    assert [e.target_id for e in listed] == [f"target-{n}" for n in (4, 3, 2, 1, 0)]
    assert [e.tenant_id for e in await audit_store.list_entries(AuditQuery("globex"))] == ["globex"]


async def test_filters_and_pages_combine(audit_store: AuditStore) -> None:
    for n in range(6):
        await audit_store.append(
            entry(n, key="k1" if n % 2 else "k2", action="a" if n < 4 else "b")
        )
    by_key = await audit_store.list_entries(AuditQuery("acme", key_id="k1"))
    assert [e.target_id for e in by_key] == ["target-5", "target-3", "target-1"]
    by_action = await audit_store.list_entries(AuditQuery("acme", action="b"))
    assert [e.target_id for e in by_action] == ["target-5", "target-4"]
    since = await audit_store.list_entries(AuditQuery("acme", since_us=NOW_US + 3 * MINUTE_US))
    assert [e.target_id for e in since] == ["target-5", "target-4", "target-3"]
    first = await audit_store.list_entries(AuditQuery("acme", limit=2))
    rest = await audit_store.list_entries(AuditQuery("acme", before=first[-1].entry_id, limit=10))
    assert [e.target_id for e in first + rest] == [f"target-{n}" for n in range(5, -1, -1)]


async def test_purge_deletes_only_entries_older_than_the_cutoff(audit_store: AuditStore) -> None:
    for n in range(4):
        await audit_store.append(entry(n))
    await audit_store.append(entry(0, tenant="globex"))
    assert await audit_store.purge(NOW_US + 2 * MINUTE_US) == 3
    assert [e.target_id for e in await audit_store.list_entries(AuditQuery("acme"))] == [
        "target-3",
        "target-2",
    ]
    assert await audit_store.list_entries(AuditQuery("globex")) == []


async def test_entries_survive_a_restart(store_backend: StoreBackend) -> None:
    store = await open_audit_store(store_backend)
    await store.append(entry(1))
    await store.aclose()
    again = await open_audit_store(store_backend)
    assert await again.list_entries(AuditQuery("acme")) == [entry(1)]
