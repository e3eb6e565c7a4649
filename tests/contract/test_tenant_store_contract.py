"""TenantStore contract: tenants, API keys and custom metrics; run against every backend."""

from __future__ import annotations

from typing import Any

from hypemeter.auth.model import ApiKey, Scope, Tenant, mint_key
from hypemeter.backends.ports import TenantStore
from hypemeter.events.model import MetricDefinition, MetricKind

NOW_US = 1_795_183_200_000_000


def key(tenant_id: str, *, at_us: int, scopes: frozenset[Scope] | None = None) -> ApiKey:
    granted = scopes or frozenset({Scope.INGEST, Scope.READ})
    return mint_key(tenant_id, granted, name=f"{tenant_id}-key", created_at_us=at_us).record


async def test_create_and_list_tenants(tenant_store: TenantStore) -> None:
    assert await tenant_store.list_tenants() == []
    assert await tenant_store.create_tenant(Tenant("zeta", NOW_US)) is True
    assert await tenant_store.create_tenant(Tenant("acme", NOW_US + 1)) is True
    assert await tenant_store.list_tenants() == [Tenant("acme", NOW_US + 1), Tenant("zeta", NOW_US)]


async def test_duplicate_tenant_is_refused_and_unchanged(tenant_store: TenantStore) -> None:
    assert await tenant_store.create_tenant(Tenant("acme", NOW_US)) is True
    assert await tenant_store.create_tenant(Tenant("acme", NOW_US + 99)) is False
    assert await tenant_store.list_tenants() == [Tenant("acme", NOW_US)]


async def test_add_and_list_keys(tenant_store: TenantStore) -> None:
    first = key("acme", at_us=NOW_US)
    admin = key("acme", at_us=NOW_US + 1, scopes=frozenset({Scope.ADMIN}))
    other = key("other", at_us=NOW_US + 2)
    for record in (admin, other, first):
        await tenant_store.add_key(record)
    assert await tenant_store.list_keys("acme") == [first, admin]
    assert await tenant_store.list_keys("other") == [other]
    assert await tenant_store.list_keys("nobody") == []
    assert await tenant_store.list_keys() == [first, admin, other]
    assert (await tenant_store.list_keys("acme"))[1].scopes == frozenset({Scope.ADMIN})


async def test_revoke_key(tenant_store: TenantStore) -> None:
    kept, revoked = key("acme", at_us=NOW_US), key("acme", at_us=NOW_US + 1)
    await tenant_store.add_key(kept)
    await tenant_store.add_key(revoked)
    result = await tenant_store.revoke_key(revoked.key_id, NOW_US + 50)
    assert result is not None
    assert result.key_id == revoked.key_id
    assert result.key_hash == revoked.key_hash
    assert result.revoked_at_us == NOW_US + 50
    assert result.active is False
    keys = await tenant_store.list_keys("acme")
    assert [(k.key_id, k.active) for k in keys] == [(kept.key_id, True), (revoked.key_id, False)]


async def test_revoking_again_keeps_the_first_time(tenant_store: TenantStore) -> None:
    record = key("acme", at_us=NOW_US)
    await tenant_store.add_key(record)
    await tenant_store.revoke_key(record.key_id, NOW_US + 10)
    again = await tenant_store.revoke_key(record.key_id, NOW_US + 20)
    assert again is not None
    assert again.revoked_at_us == NOW_US + 10


async def test_revoking_an_unknown_key_returns_none(tenant_store: TenantStore) -> None:
    await tenant_store.add_key(key("acme", at_us=NOW_US))
    assert await tenant_store.revoke_key("no-such-key", NOW_US) is None
    assert [k.active for k in await tenant_store.list_keys()] == [True]


async def test_custom_metrics(tenant_store: TenantStore) -> None:
    replies = MetricDefinition("story_replies", MetricKind.COUNTER)
    watch = MetricDefinition("watch_time", MetricKind.GAUGE)
    assert await tenant_store.list_metrics() == []
    assert await tenant_store.add_metric("acme", watch) is True
    assert await tenant_store.add_metric("acme", replies) is True
    assert await tenant_store.add_metric("other", replies) is True
    assert await tenant_store.list_metrics() == [
        ("acme", replies),
        ("acme", watch),
        ("other", replies),
    ]


async def test_duplicate_custom_metric_is_refused(tenant_store: TenantStore) -> None:
    counter = MetricDefinition("dwell", MetricKind.COUNTER)
    assert await tenant_store.add_metric("acme", counter) is True
    gauge = MetricDefinition("dwell", MetricKind.GAUGE)
    assert await tenant_store.add_metric("acme", gauge) is False
    assert await tenant_store.list_metrics() == [("acme", counter)]


async def test_everything_survives_reopen(store_backend: Any) -> None:
    store = await store_backend.open_tenant_store()
    record = key("acme", at_us=NOW_US)
    metric = MetricDefinition("dwell", MetricKind.GAUGE)
    await store.create_tenant(Tenant("acme", NOW_US))
    await store.add_key(record)
    await store.revoke_key(record.key_id, NOW_US + 5)
    await store.add_metric("acme", metric)
    await store.aclose()
    reopened = await store_backend.open_tenant_store()
    assert await reopened.list_tenants() == [Tenant("acme", NOW_US)]
    keys = await reopened.list_keys("acme")
    assert [(k.key_id, k.key_hash, k.revoked_at_us) for k in keys] == [
        (record.key_id, record.key_hash, NOW_US + 5)
    ]
    assert await reopened.list_metrics() == [("acme", metric)]
