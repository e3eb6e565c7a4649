"""TenantStore contract: tenants, API keys, custom metrics and stream tokens; every backend."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
import duckdb

from hypemeter.auth.model import NO_LIMITS, ApiKey, KeyLimits, Scope, Tenant, mint_key
from hypemeter.auth.ports import StreamTokenRecord, TenantStore
from hypemeter.events.model import MetricDefinition, MetricKind, ValueLimit

from .conftest import POSTGRES_DSN, DuckDBBackend

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


def token(n: int, *, key_id: str = "k1", tenant_id: str = "acme", expires_us: int = 2_000) -> Any:
    return StreamTokenRecord(
        f"sub_{n}",
        tenant_id,
        key_id,
        f"hash-{n}",
        '{"influencer_id": "inf-1"}',
        ("likes", "engagement_rate"),
        expires_us,
    )


async def test_stream_tokens_are_found_by_hash_until_they_expire(tenant_store: TenantStore) -> None:
    assert await tenant_store.add_stream_token(token(1), limit=5, now_us=1_000)
    found = await tenant_store.find_stream_token("hash-1", 1_999)
    assert found == token(1)
    assert await tenant_store.find_stream_token("hash-1", 2_000) is None
    assert await tenant_store.find_stream_token("hash-2", 1_000) is None


async def test_stream_tokens_per_key_are_limited_counting_only_unexpired(
    tenant_store: TenantStore,
) -> None:
    assert await tenant_store.add_stream_token(token(1, expires_us=1_500), limit=2, now_us=1_000)
    assert await tenant_store.add_stream_token(token(2), limit=2, now_us=1_000)
    assert not await tenant_store.add_stream_token(token(3), limit=2, now_us=1_000)
    assert await tenant_store.add_stream_token(token(4, key_id="k2"), limit=2, now_us=1_000)
    # Once the first has expired, the key has room for one more.
    assert await tenant_store.add_stream_token(token(5), limit=2, now_us=1_600)
    assert await tenant_store.find_stream_token("hash-3", 1_600) is None
    assert await tenant_store.find_stream_token("hash-5", 1_600) == token(5)


async def test_revoking_a_stream_token_needs_its_tenant(tenant_store: TenantStore) -> None:
    await tenant_store.add_stream_token(token(1), limit=5, now_us=1_000)
    assert await tenant_store.revoke_stream_token("globex", "sub_1") is None
    assert await tenant_store.find_stream_token("hash-1", 1_000) == token(1)
    assert await tenant_store.revoke_stream_token("acme", "sub_1") == token(1)
    assert await tenant_store.find_stream_token("hash-1", 1_000) is None
    assert await tenant_store.revoke_stream_token("acme", "sub_1") is None


# -- key limits and value limits ----------------------------------------------------------

LIMITED = KeyLimits(
    platforms=frozenset({"app", "web"}),
    metrics=frozenset({"clicks"}),
    influencers=frozenset({"inf-1", "inf-☃"}),
    campaigns=frozenset({"summer"}),
    max_value=250.0,
)


async def test_a_keys_limits_are_kept_and_survive_revocation(tenant_store: TenantStore) -> None:
    limited = mint_key(
        "acme", frozenset({Scope.INGEST}), name="sdk", created_at_us=NOW_US, limits=LIMITED
    ).record
    plain = key("acme", at_us=NOW_US + 1)
    await tenant_store.add_key(limited)
    await tenant_store.add_key(plain)
    assert await tenant_store.list_keys("acme") == [limited, plain]
    assert [k.limits for k in await tenant_store.list_keys()] == [LIMITED, NO_LIMITS]
    revoked = await tenant_store.revoke_key(limited.key_id, NOW_US + 5)
    assert revoked is not None
    assert revoked.limits == LIMITED


async def test_keys_stored_before_limits_existed_have_none(store_backend: Any) -> None:
    """A data file or schema made before keys had limits: the column is added at start,
    the old keys come back unlimited, and new keys keep their limits."""
    await _store_a_key_the_old_way(store_backend)
    store = await store_backend.open_tenant_store()
    (old,) = await store.list_keys("acme")
    assert (old.key_id, old.name, old.limits) == ("0123456789ab", "old", NO_LIMITS)
    assert old.scopes == frozenset({Scope.INGEST})
    new = mint_key("acme", frozenset({Scope.READ}), name="new", created_at_us=NOW_US + 1)
    narrowed = KeyLimits(campaigns=frozenset({"summer"}))
    await store.add_key(dataclasses.replace(new.record, limits=narrowed))
    assert [k.limits for k in await store.list_keys("acme")] == [NO_LIMITS, narrowed]


OLD_KEYS = (
    "CREATE TABLE api_keys (key_id {t} PRIMARY KEY, tenant_id {t} NOT NULL, "
    "key_hash {t} NOT NULL UNIQUE, scopes {t}[] NOT NULL, name {t} NOT NULL, "
    "created_at_us BIGINT NOT NULL, revoked_at_us BIGINT)"
)
OLD_ROW = ("0123456789ab", "acme", "old-hash", ["ingest"], "old", NOW_US, None)


async def _store_a_key_the_old_way(store_backend: Any) -> None:
    if isinstance(store_backend, DuckDBBackend):
        with duckdb.connect(str(store_backend.path)) as con:
            con.execute(OLD_KEYS.format(t="VARCHAR"))
            con.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)", list(OLD_ROW))
        return
    con = await asyncpg.connect(POSTGRES_DSN)
    try:
        await con.execute(f'CREATE SCHEMA "{store_backend.schema}"')
        await con.execute(f'SET search_path TO "{store_backend.schema}"')
        await con.execute(OLD_KEYS.format(t="text"))
        await con.execute("INSERT INTO api_keys VALUES ($1, $2, $3, $4, $5, $6, $7)", *OLD_ROW)
    finally:
        await con.close()


async def test_value_limits_are_set_replaced_and_removed(tenant_store: TenantStore) -> None:
    assert await tenant_store.list_value_limits() == []
    await tenant_store.set_value_limits(
        "acme", {"conversions": ValueLimit(5_000, 1e9), "likes": ValueLimit(10, 20)}
    )
    await tenant_store.set_value_limits("other", {"likes": ValueLimit(1, 2)})
    await tenant_store.set_value_limits(
        "acme", {"likes": None, "conversions": ValueLimit(6_000, 1e9), "views": None}
    )
    assert await tenant_store.list_value_limits() == [
        ("acme", "conversions", ValueLimit(6_000, 1e9)),
        ("other", "likes", ValueLimit(1, 2)),
    ]


async def test_value_limits_survive_reopen(store_backend: Any) -> None:
    store = await store_backend.open_tenant_store()
    await store.set_value_limits("acme", {"revenue": ValueLimit(1e7, 1e11)})
    await store.aclose()
    reopened = await store_backend.open_tenant_store()
    assert await reopened.list_value_limits() == [("acme", "revenue", ValueLimit(1e7, 1e11))]
