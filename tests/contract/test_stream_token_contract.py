"""TenantStore contract, stream-token part: the right to tail, revocation by the minting
key, the end of a key's tokens, and the tail column added to stores made before it."""

from __future__ import annotations

from typing import Any

import asyncpg
import duckdb

from hypemeter.auth.ports import StreamTokenRecord, TenantStore

from .conftest import POSTGRES_DSN, DuckDBBackend, PostgresBackend


def token(n: int, *, key_id: str = "k1", tail: bool = False) -> StreamTokenRecord:
    return StreamTokenRecord(
        f"sub_{n}",
        "acme",
        key_id,
        f"hash-{n}",
        '{"influencer_id": "inf-1"}',
        ("likes",),
        2_000,
        tail,
    )


async def test_the_tail_right_is_kept(tenant_store: TenantStore) -> None:
    assert await tenant_store.add_stream_token(token(1, tail=True), limit=5, now_us=1_000)
    assert await tenant_store.add_stream_token(token(2), limit=5, now_us=1_000)
    assert await tenant_store.find_stream_token("hash-1", 1_000) == token(1, tail=True)
    assert await tenant_store.find_stream_token("hash-2", 1_000) == token(2)


async def test_with_a_key_id_only_that_key_revokes_its_token(tenant_store: TenantStore) -> None:
    await tenant_store.add_stream_token(token(1, key_id="k1"), limit=5, now_us=1_000)
    assert await tenant_store.revoke_stream_token("acme", "sub_1", key_id="k2") is None
    assert await tenant_store.find_stream_token("hash-1", 1_000) == token(1)
    assert await tenant_store.revoke_stream_token("acme", "sub_1", key_id="k1") == token(1)
    assert await tenant_store.find_stream_token("hash-1", 1_000) is None


async def test_revoking_a_key_ends_all_its_tokens(tenant_store: TenantStore) -> None:
    for n, key_id in ((1, "k1"), (2, "k2"), (3, "k1")):
        await tenant_store.add_stream_token(token(n, key_id=key_id), limit=5, now_us=1_000)
    assert await tenant_store.revoke_key_stream_tokens("k1") == ["sub_1", "sub_3"]
    assert await tenant_store.find_stream_token("hash-1", 1_000) is None
    assert await tenant_store.find_stream_token("hash-3", 1_000) is None
    assert await tenant_store.find_stream_token("hash-2", 1_000) == token(2, key_id="k2")
    assert await tenant_store.revoke_key_stream_tokens("k1") == []


async def _drop_tail_column(backend: Any) -> None:
    """Make the store look like one made before the column existed."""
    if isinstance(backend, DuckDBBackend):
        con = duckdb.connect(str(backend.path))
        try:
            con.execute("ALTER TABLE stream_tokens DROP COLUMN tail")
        finally:
            con.close()
        return
    assert isinstance(backend, PostgresBackend)
    con = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": backend.schema})
    try:
        await con.execute("ALTER TABLE stream_tokens DROP COLUMN tail")
    finally:
        await con.close()


async def test_a_store_made_before_the_tail_column_gains_it(store_backend: Any) -> None:
    store = await store_backend.open_tenant_store()
    await store.add_stream_token(token(1, tail=True), limit=5, now_us=1_000)
    await store.aclose()
    await _drop_tail_column(store_backend)
    reopened = await store_backend.open_tenant_store()
    # Its old tokens carry no right to tail; new ones keep theirs.
    assert await reopened.find_stream_token("hash-1", 1_000) == token(1)
    assert await reopened.add_stream_token(token(2, tail=True), limit=5, now_us=1_000)
    assert await reopened.find_stream_token("hash-2", 1_000) == token(2, tail=True)
