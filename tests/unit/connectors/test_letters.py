"""The dead-letter archive privacy purges and erases through, over a fake document
store: only dead letters, only the tenant's, a page at a time, bodies as received."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from hypemeter.connectors.letters import DeadLetterArchive
from hypemeter.connectors.model import CONNECTOR, DeadLetter, letter_record
from hypemeter.registry.model import RegistryRecord


class FakeDocuments:
    """Documents by (tenant, kind, id), as the registry's stores keep them."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str, str], RegistryRecord] = {}

    async def insert_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        key = (tenant_id, record.kind, record.entity_id)
        if key in self.docs:
            return False
        self.docs[key] = record
        return True

    async def update_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        key = (tenant_id, record.kind, record.entity_id)
        if key not in self.docs:
            return False
        self.docs[key] = record
        return True

    async def get_entity(self, tenant_id: str, kind: str, entity_id: str) -> RegistryRecord | None:
        return self.docs.get((tenant_id, kind, entity_id))

    async def delete_entity(self, tenant_id: str, kind: str, entity_id: str) -> bool:
        return self.docs.pop((tenant_id, kind, entity_id), None) is not None

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
        found = sorted(
            (r for (t, k, i), r in self.docs.items() if (t, k) == (tenant_id, kind)),
            key=lambda r: r.entity_id,
        )
        return [r for r in found if after is None or r.entity_id > after][:limit]

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        return [(t, r) for (t, k, _), r in sorted(self.docs.items()) if k == kind]

    async def purge_entities(self, kind: str, updated_before_us: int, *, limit: int) -> list[str]:
        old = [
            key
            for key, r in sorted(self.docs.items())
            if key[1] == kind and r.updated_us < updated_before_us
        ][:limit]
        for key in old:
            del self.docs[key]
        return [tenant for tenant, _, _ in old]


def letter(letter_id: str, body: bytes) -> DeadLetter:
    return DeadLetter(
        id=letter_id,
        connector_id="con_1",
        platform="instagram",
        received_us=1,
        reasons=("unknown field",),
        headers={},
        body_b64=base64.b64encode(body).decode(),
    )


def connector_record(connector_id: str) -> RegistryRecord:
    return RegistryRecord(CONNECTOR, connector_id, "{}", " ", connector_id, 1)


async def filled() -> FakeDocuments:
    docs = FakeDocuments()
    for n in range(5):
        await docs.insert_entity("acme", letter_record(letter(f"dl_{n}", b"body %d" % n), n))
    await docs.insert_entity("other", letter_record(letter("dl_9", b"theirs"), 0))
    await docs.insert_entity("acme", connector_record("con_1"))
    return docs


async def test_letters_are_the_tenants_dead_letters_a_page_at_a_time() -> None:
    archive = DeadLetterArchive(await filled())
    first = await archive.letters("acme", after=None, limit=3)
    rest = await archive.letters("acme", after=first[-1].letter_id, limit=3)
    assert [x.letter_id for x in first] == ["dl_0", "dl_1", "dl_2"]
    assert [x.letter_id for x in rest] == ["dl_3", "dl_4"]
    assert [x.body() for x in rest] == [b"body 3", b"body 4"]
    assert await archive.letters("acme", after="dl_4", limit=3) == []


async def test_delete_letter_removes_one_letter_of_the_tenant_only() -> None:
    docs = await filled()
    archive = DeadLetterArchive(docs)
    assert await archive.delete_letter("acme", "dl_9") is False  # another tenant's
    assert await archive.delete_letter("acme", "dl_1") is True
    assert await archive.delete_letter("acme", "dl_1") is False
    assert await archive.delete_letter("acme", "con_1") is False  # not a dead letter
    assert sorted(i for (t, _, i) in docs.docs if t == "acme") == [
        "con_1",
        "dl_0",
        "dl_2",
        "dl_3",
        "dl_4",
    ]


async def test_purge_letters_deletes_dead_letters_changed_before_the_time() -> None:
    docs = await filled()
    archive = DeadLetterArchive(docs)
    assert sorted(await archive.purge_letters(2, limit=100)) == ["acme", "acme", "other"]
    left = sorted((t, i) for (t, _, i) in docs.docs)
    assert left == [("acme", "con_1"), ("acme", "dl_2"), ("acme", "dl_3"), ("acme", "dl_4")]
