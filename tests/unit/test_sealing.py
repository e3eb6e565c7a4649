"""Secrets at rest: sealing with a ring of Fernet keys, rotation, and where keys come from."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from hypemeter.errors import InvalidInput, SecretsUnavailable
from hypemeter.registry.model import RegistryRecord
from hypemeter.sealing import (
    KEY_FILE_NAME,
    KeySource,
    SealedRegistryStore,
    Sealer,
    is_sealed,
    new_key,
)
from hypemeter.settings import Settings

DOC = '{"id":"con_1","platform":"instagram","secrets":{"app_secret":"s3cr3t-value"}}'
SECRET = "s3cr3t-value"


def test_a_sealed_document_hides_its_secret_and_opens_again() -> None:
    sealer = Sealer([new_key()], origin="test")

    sealed = sealer.seal(DOC)

    assert SECRET not in sealed
    assert is_sealed(sealed)
    assert sealer.open(sealed) == DOC
    assert sealer.seal(DOC) != sealed  # a fresh IV each time: equal secrets look different


def test_a_document_written_before_sealing_reads_as_it_is() -> None:
    assert not is_sealed(DOC)
    assert Sealer([new_key()]).open(DOC) == DOC
    assert Sealer().open(DOC) == DOC  # no key needed for what was never sealed


def test_old_keys_still_open_and_the_newest_seals() -> None:
    old, new = new_key(), new_key()
    sealed_with_old = Sealer([old]).seal(DOC)
    ring = Sealer([new, old], origin="ring")

    assert ring.open(sealed_with_old) == DOC
    resealed = ring.reseal(sealed_with_old)
    assert resealed is not None
    assert Sealer([new]).open(resealed) == DOC  # the old key is no longer needed
    assert ring.reseal(resealed) is None  # already sealed with the newest key
    with pytest.raises(SecretsUnavailable):
        Sealer([old]).open(resealed)


def test_a_plain_document_is_sealed_by_a_reseal() -> None:
    key = new_key()
    resealed = Sealer([key]).reseal(DOC)
    assert resealed is not None and is_sealed(resealed)
    assert Sealer([key]).open(resealed) == DOC


def test_without_a_key_nothing_is_sealed_and_the_error_names_the_setting() -> None:
    with pytest.raises(SecretsUnavailable) as refused:
        Sealer().seal(DOC)
    assert "HYPEMETER_SECRET_KEYS" in refused.value.message
    assert refused.value.field == "secret_keys"

    sealed = Sealer([new_key()]).seal(DOC)
    with pytest.raises(SecretsUnavailable) as missing:
        Sealer().open(sealed)
    assert "HYPEMETER_SECRET_KEYS" in missing.value.message


def test_a_wrong_key_says_which_keys_were_tried() -> None:
    sealed = Sealer([new_key()]).seal(DOC)
    with pytest.raises(SecretsUnavailable) as wrong:
        Sealer([new_key()], origin="HYPEMETER_SECRET_KEYS").open(sealed)
    assert "HYPEMETER_SECRET_KEYS" in wrong.value.message


def test_a_malformed_key_is_refused_with_its_position() -> None:
    with pytest.raises(InvalidInput) as bad:
        KeySource(listed=f"{new_key()},not-a-key").load(sealed_stored=False)
    assert "key 2 of HYPEMETER_SECRET_KEYS" in bad.value.message
    assert "not-a-key" not in bad.value.message  # a key is never echoed


# -- where the keys come from ---------------------------------------------------------


def test_listed_keys_are_newest_first() -> None:
    old, new = new_key(), new_key()
    sealer = KeySource(listed=f" {new} , {old} ").load(sealed_stored=False)
    assert Sealer([new]).open(sealer.seal(DOC)) == DOC


def test_a_key_file_holds_one_key_a_line(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    path = tmp_path / "keys"
    path.write_text(f"# rotated in November\n{new}\n\n{old}\n")
    sealer = KeySource(file=path).load(sealed_stored=False)
    assert sealer.open(Sealer([old]).seal(DOC)) == DOC
    assert Sealer([new]).open(sealer.seal(DOC)) == DOC


def test_a_missing_key_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SecretsUnavailable) as missing:
        KeySource(file=tmp_path / "nope").load(sealed_stored=False)
    assert "HYPEMETER_SECRET_KEY_FILE" in missing.value.message


def test_keys_and_a_key_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as both:
        KeySource(listed=new_key(), file=tmp_path / "k").load(sealed_stored=False)
    assert both.value.field == "secret_keys"


def test_the_embedded_default_key_file_is_made_private_once(tmp_path: Path) -> None:
    source = KeySource.of(Settings(data=tmp_path / "data"))
    assert source.default_file == (tmp_path / "data" / KEY_FILE_NAME).resolve()

    first = source.load(sealed_stored=False)
    path = tmp_path / "data" / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = source.load(sealed_stored=True)  # the same file, read again
    assert second.open(first.seal(DOC)) == DOC


def test_a_lost_default_key_file_is_not_replaced_when_sealed_values_exist(tmp_path: Path) -> None:
    source = KeySource(default_file=tmp_path / KEY_FILE_NAME)
    with pytest.raises(SecretsUnavailable) as lost:
        source.load(sealed_stored=True)
    assert "HYPEMETER_SECRET_KEYS" in lost.value.message
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_a_shared_store_gets_no_key_of_its_own() -> None:
    settings = Settings(store="postgresql://db.example/hm")
    source = KeySource.of(settings)
    assert source.default_file is None
    assert not source.load(sealed_stored=False).has_keys


# -- the store wrapper ------------------------------------------------------------------


class MemoryRegistry:
    """Documents by (tenant, kind, id), as a registry store keeps them."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], RegistryRecord] = {}
        self.starts = 0
        self.reclaims = 0  # times asked to drop the old copies of rewritten documents

    async def start(self) -> None:
        self.starts += 1

    async def aclose(self) -> None:
        pass

    async def reclaim(self) -> None:
        self.reclaims += 1

    async def insert_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        key = (tenant_id, record.kind, record.entity_id)
        if key in self.rows:
            return False
        self.rows[key] = record
        return True

    async def update_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        key = (tenant_id, record.kind, record.entity_id)
        if key not in self.rows:
            return False
        self.rows[key] = record
        return True

    async def get_entity(self, tenant_id: str, kind: str, entity_id: str) -> RegistryRecord | None:
        return self.rows.get((tenant_id, kind, entity_id))

    async def delete_entity(self, tenant_id: str, kind: str, entity_id: str) -> bool:
        return self.rows.pop((tenant_id, kind, entity_id), None) is not None

    async def list_entities(
        self,
        tenant_id: str,
        kind: str,
        *,
        tokens: Sequence[str],
        search: str | None,
        after: str | None,
        limit: int,
    ) -> list[RegistryRecord]:
        found = [r for (t, k, _), r in sorted(self.rows.items()) if (t, k) == (tenant_id, kind)]
        return found[:limit]

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        return [
            (t, r)
            for (t, k, _), r in sorted(self.rows.items())
            if k == kind and tenant_id in (None, t)
        ]


def record(kind: str, entity_id: str, doc: str) -> RegistryRecord:
    return RegistryRecord(kind, entity_id, doc, " ", entity_id, 1)


async def test_connector_documents_are_stored_sealed_and_read_plain() -> None:
    inner = MemoryRegistry()
    store = SealedRegistryStore(inner, KeySource(listed=new_key()))
    await store.start()

    assert await store.insert_entity("acme", record("connector", "con_1", DOC))
    assert await store.insert_entity("acme", record("influencer", "inf-1", '{"id":"inf-1"}'))

    kept = inner.rows[("acme", "connector", "con_1")].doc
    assert SECRET not in kept and is_sealed(kept)
    assert inner.rows[("acme", "influencer", "inf-1")].doc == '{"id":"inf-1"}'  # not a secret
    got = await store.get_entity("acme", "connector", "con_1")
    assert got is not None and got.doc == DOC
    listed = await store.list_entities(
        "acme", "connector", tokens=[], search=None, after=None, limit=10
    )
    assert [r.doc for r in listed] == [DOC]
    assert [r.doc for _, r in await store.all_entities("connector")] == [DOC]


async def test_start_fails_naming_the_setting_when_no_key_opens_the_store() -> None:
    inner = MemoryRegistry()
    sealed = Sealer([new_key()]).seal(DOC)
    inner.rows[("acme", "connector", "con_1")] = record("connector", "con_1", sealed)

    for keys in (KeySource(), KeySource(listed=new_key())):
        with pytest.raises(SecretsUnavailable) as refused:
            await SealedRegistryStore(inner, keys).start()
        assert "HYPEMETER_SECRET_KEYS" in refused.value.message


async def test_a_store_without_sealed_values_starts_without_a_key_but_cannot_seal() -> None:
    inner = MemoryRegistry()
    inner.rows[("acme", "connector", "con_0")] = record("connector", "con_0", DOC)  # plain
    store = SealedRegistryStore(inner, KeySource())
    await store.start()

    assert [r.doc for _, r in await store.all_entities("connector")] == [DOC]
    with pytest.raises(SecretsUnavailable):
        await store.insert_entity("acme", record("connector", "con_1", DOC))
    assert ("acme", "connector", "con_1") not in inner.rows
    assert inner.reclaims == 0


async def test_a_start_with_a_key_seals_what_an_earlier_version_stored_plain() -> None:
    key = new_key()
    inner = MemoryRegistry()
    inner.rows[("acme", "connector", "a")] = record("connector", "a", DOC)  # before sealing
    inner.rows[("acme", "connector", "b")] = record("connector", "b", Sealer([key]).seal(DOC))
    inner.rows[("acme", "influencer", "i")] = record("influencer", "i", '{"id":"i"}')
    store = SealedRegistryStore(inner, KeySource(listed=key))

    await store.start()

    plain = inner.rows[("acme", "connector", "a")].doc
    assert is_sealed(plain) and SECRET not in plain
    assert Sealer([key]).open(plain) == DOC
    assert inner.rows[("acme", "influencer", "i")].doc == '{"id":"i"}'
    assert inner.reclaims == 1  # the store drops the plain copies its files still hold
    assert [r.doc for _, r in await store.all_entities("connector")] == [DOC, DOC]

    await SealedRegistryStore(inner, KeySource(listed=key)).start()
    assert inner.reclaims == 1  # nothing left to seal: nothing to reclaim


async def test_reseal_moves_every_connector_to_the_newest_key() -> None:
    old, new = new_key(), new_key()
    inner = MemoryRegistry()
    inner.rows[("acme", "connector", "a")] = record("connector", "a", Sealer([old]).seal(DOC))
    inner.rows[("acme", "connector", "b")] = record("connector", "b", DOC)  # never sealed
    inner.rows[("globex", "connector", "c")] = record("connector", "c", Sealer([new]).seal(DOC))
    store = SealedRegistryStore(inner, KeySource(listed=f"{new},{old}"))
    await store.start()  # seals "b" with the newest key
    reclaims = inner.reclaims

    done = await store.reseal()

    assert (done.resealed, done.total) == (1, 3)
    assert inner.reclaims == reclaims + 1  # the copies sealed with the old key go too
    only_new = Sealer([new])
    for row in inner.rows.values():
        assert msgspec.json.decode(only_new.open(row.doc)) == msgspec.json.decode(DOC)
    assert (await store.reseal()).resealed == 0
    assert inner.reclaims == reclaims + 1
