"""RegistryStore contract: influencers, campaigns and content as records; every backend.

The records are built the way the service builds them (``registry.model.to_record``),
so the ``keys`` and ``search`` strings the filters run on are the real ones.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypemeter.registry.model import (
    Account,
    Campaign,
    Content,
    Entity,
    Influencer,
    RegistryRecord,
    key_token,
    to_record,
)
from hypemeter.registry.ports import RegistryStore

NOW_US = 1_795_183_200_000_000
INFLUENCER, CAMPAIGN, CONTENT = "influencer", "campaign", "content"


def influencer(
    entity_id: str,
    *,
    name: str | None = None,
    tags: tuple[str, ...] = (),
    accounts: tuple[Account, ...] = (),
) -> Influencer:
    return Influencer(
        id=entity_id, name=name or f"Name of {entity_id}", tags=tags, accounts=accounts
    )


def record(entity: Entity, updated_us: int = NOW_US) -> RegistryRecord:
    return to_record(entity, updated_us)


def ids(records: list[RegistryRecord]) -> list[str]:
    return [r.entity_id for r in records]


async def everything(
    store: RegistryStore, tenant_id: str | None = None
) -> list[tuple[str, RegistryRecord]]:
    """``all_entities`` of every kind, kind by kind (as the service loads a directory)."""
    out: list[tuple[str, RegistryRecord]] = []
    for kind in (CAMPAIGN, CONTENT, INFLUENCER):
        out += await store.all_entities(kind, tenant_id)
    return out


async def listed(
    store: RegistryStore,
    kind: str = INFLUENCER,
    *,
    tenant_id: str = "acme",
    tokens: tuple[str, ...] = (),
    search: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[str]:
    found = await store.list_entities(
        tenant_id, kind, tokens=list(tokens), search=search, after=after, limit=limit
    )
    return ids(found)


# -- single records -----------------------------------------------------------------


async def test_insert_then_get_returns_the_record_as_stored(registry_store: RegistryStore) -> None:
    ana = record(
        Influencer(
            id="inf-42",
            name="Zoë Ana 🎉",
            tags=("beauty", "two words"),
            accounts=(Account("instagram", "1784", handle="@ana.makes", followers=184_000),),
            created_at="2026-11-20T14:00:00.000000Z",
            updated_at="2026-11-20T14:00:00.000000Z",
        ),
        updated_us=NOW_US + 7,
    )
    assert await registry_store.get_entity("acme", INFLUENCER, "inf-42") is None
    assert await registry_store.insert_entity("acme", ana) is True

    got = await registry_store.get_entity("acme", INFLUENCER, "inf-42")
    assert got == ana
    assert got is not None
    assert got.updated_us == NOW_US + 7
    assert got.keys == " account=instagram%3A1784 platform=instagram tag=beauty tag=two%20words "
    assert got.search == "inf-42\nzoë ana 🎉\n@ana.makes\nana.makes"


async def test_inserting_an_existing_id_returns_false_and_changes_nothing(
    registry_store: RegistryStore,
) -> None:
    first = record(influencer("inf-1", name="First", tags=("a",)), NOW_US)
    second = record(influencer("inf-1", name="Second", tags=("b",)), NOW_US + 1)
    assert await registry_store.insert_entity("acme", first) is True
    assert await registry_store.insert_entity("acme", second) is False
    assert await registry_store.get_entity("acme", INFLUENCER, "inf-1") == first
    assert await everything(registry_store) == [("acme", first)]


async def test_updating_a_missing_entity_returns_false_and_stores_nothing(
    registry_store: RegistryStore,
) -> None:
    ghost = record(influencer("ghost"))
    assert await registry_store.update_entity("acme", ghost) is False
    assert await registry_store.get_entity("acme", INFLUENCER, "ghost") is None
    assert await everything(registry_store) == []


async def test_update_replaces_doc_keys_search_and_updated_us(
    registry_store: RegistryStore,
) -> None:
    before = record(influencer("inf-1", name="Old Name", tags=("a",)), NOW_US)
    after = record(
        influencer(
            "inf-1",
            name="New Name",
            tags=("b",),
            accounts=(Account("tiktok", "t-9", handle="@new"),),
        ),
        NOW_US + 1000,
    )
    assert await registry_store.insert_entity("acme", before) is True
    assert (before.doc, before.keys, before.search) != (after.doc, after.keys, after.search)

    assert await registry_store.update_entity("acme", after) is True

    got = await registry_store.get_entity("acme", INFLUENCER, "inf-1")
    assert got == after
    assert got is not None
    assert (got.doc, got.keys, got.search, got.updated_us) == (
        after.doc,
        after.keys,
        after.search,
        NOW_US + 1000,
    )
    # The filters and the search follow the new strings, not the old ones.
    assert await listed(registry_store, tokens=(key_token("tag", "a"),)) == []
    assert await listed(registry_store, tokens=(key_token("tag", "b"),)) == ["inf-1"]
    assert await listed(registry_store, search="old") == []
    assert await listed(registry_store, search="new name") == ["inf-1"]


async def test_delete_returns_true_then_false(registry_store: RegistryStore) -> None:
    kept, gone = record(influencer("inf-1")), record(influencer("inf-2"))
    await registry_store.insert_entity("acme", kept)
    await registry_store.insert_entity("acme", gone)

    assert await registry_store.delete_entity("acme", INFLUENCER, "inf-2") is True
    assert await registry_store.delete_entity("acme", INFLUENCER, "inf-2") is False
    assert await registry_store.delete_entity("acme", INFLUENCER, "never") is False

    assert await registry_store.get_entity("acme", INFLUENCER, "inf-2") is None
    assert await everything(registry_store) == [("acme", kept)]
    # The id is free again.
    assert await registry_store.insert_entity("acme", gone) is True


async def test_tenants_and_kinds_are_isolated(registry_store: RegistryStore) -> None:
    acme_inf = record(influencer("x", name="Acme influencer"))
    globex_inf = record(influencer("x", name="Globex influencer"), NOW_US + 1)
    acme_camp = record(Campaign(id="x", name="Acme campaign"), NOW_US + 2)
    acme_content = record(Content(id="x", platform="instagram", influencer_id="x"), NOW_US + 3)
    for tenant, rec in (
        ("acme", acme_inf),
        ("globex", globex_inf),
        ("acme", acme_camp),
        ("acme", acme_content),
    ):
        assert await registry_store.insert_entity(tenant, rec) is True

    assert await registry_store.get_entity("acme", INFLUENCER, "x") == acme_inf
    assert await registry_store.get_entity("globex", INFLUENCER, "x") == globex_inf
    assert await registry_store.get_entity("acme", CAMPAIGN, "x") == acme_camp
    assert await registry_store.get_entity("acme", CONTENT, "x") == acme_content
    assert await registry_store.get_entity("globex", CAMPAIGN, "x") is None
    assert await registry_store.get_entity("initech", INFLUENCER, "x") is None

    assert await listed(registry_store, INFLUENCER, tenant_id="acme", search="influencer") == ["x"]
    assert await listed(registry_store, CAMPAIGN, tenant_id="globex") == []
    assert await listed(registry_store, CONTENT, tenant_id="acme") == ["x"]

    # An update or a delete touches its own tenant and kind alone.
    renamed = record(influencer("x", name="Renamed"), NOW_US + 9)
    assert await registry_store.update_entity("globex", renamed) is True
    assert await registry_store.get_entity("acme", INFLUENCER, "x") == acme_inf
    assert await registry_store.delete_entity("acme", CAMPAIGN, "x") is True
    assert await registry_store.get_entity("acme", INFLUENCER, "x") == acme_inf
    assert await registry_store.get_entity("acme", CONTENT, "x") == acme_content
    assert await registry_store.delete_entity("globex", CONTENT, "x") is False
    assert await everything(registry_store) == [
        ("acme", acme_content),
        ("acme", acme_inf),
        ("globex", renamed),
    ]


# -- lists ---------------------------------------------------------------------------

# Upper case, punctuation and digits: the order is by code point (bytes) on every backend.
MIXED_IDS = ["b", "a_1", "B", "a", "a1", "a-1", "a.1", "A:2", "a@z", "0"]


async def test_list_orders_by_id_in_code_point_order(registry_store: RegistryStore) -> None:
    for n, entity_id in enumerate(MIXED_IDS):
        await registry_store.insert_entity("acme", record(influencer(entity_id), NOW_US + n))
    assert await listed(registry_store) == sorted(MIXED_IDS)
    assert sorted(MIXED_IDS) == ["0", "A:2", "B", "a", "a-1", "a.1", "a1", "a@z", "a_1", "b"]


async def test_list_pages_with_after_and_limit(registry_store: RegistryStore) -> None:
    for entity_id in MIXED_IDS:
        await registry_store.insert_entity("acme", record(influencer(entity_id)))
    expected = sorted(MIXED_IDS)

    assert await listed(registry_store, limit=3) == expected[:3]
    assert await listed(registry_store, limit=1) == expected[:1]
    assert await listed(registry_store, after="a") == expected[4:]
    assert await listed(registry_store, after="a", limit=2) == ["a-1", "a.1"]
    # ``after`` need not be a stored id; the last id gives nothing.
    assert await listed(registry_store, after="a0") == ["a1", "a@z", "a_1", "b"]
    assert await listed(registry_store, after="b") == []

    walked: list[str] = []
    after: str | None = None
    for _ in range(20):
        page = await listed(registry_store, after=after, limit=3)
        if not page:
            break
        walked.extend(page)
        after = page[-1]
    assert walked == expected


def _tagged() -> list[Influencer]:
    ig, tt = Account("instagram", "1", handle="@one"), Account("tiktok", "2", handle="@two")
    return [
        influencer("inf-a", tags=("a",), accounts=(ig,)),
        influencer("inf-ab", tags=("ab",), accounts=(tt,)),
        influencer("inf-both", tags=("a", "b"), accounts=(Account("instagram", "3"),)),
        influencer("inf-b", tags=("b", "two words")),
        influencer("inf-none"),
    ]


async def test_tokens_filter_whole_tokens_and_all_must_match(
    registry_store: RegistryStore,
) -> None:
    for entity in _tagged():
        await registry_store.insert_entity("acme", record(entity))

    def tag(value: str) -> str:
        return key_token("tag", value)

    # "tag=a" is found whole: not in "tag=ab".
    assert await listed(registry_store, tokens=(tag("a"),)) == ["inf-a", "inf-both"]
    assert await listed(registry_store, tokens=(tag("ab"),)) == ["inf-ab"]
    assert await listed(registry_store, tokens=(tag("b"),)) == ["inf-b", "inf-both"]
    # Several tokens: every one must match.
    assert await listed(registry_store, tokens=(tag("a"), tag("b"))) == ["inf-both"]
    assert await listed(registry_store, tokens=(tag("a"), key_token("platform", "instagram"))) == [
        "inf-a",
        "inf-both",
    ]
    assert (
        await listed(registry_store, tokens=(tag("ab"), key_token("platform", "instagram"))) == []
    )
    # Values are percent-encoded: a space does not split a token.
    assert await listed(registry_store, tokens=(tag("two words"),)) == ["inf-b"]
    assert await listed(registry_store, tokens=(tag("two"),)) == []
    assert await listed(registry_store, tokens=(key_token("account", "instagram:3"),)) == [
        "inf-both"
    ]
    assert await listed(registry_store, tokens=(key_token("account", "instagram:"),)) == []
    assert await listed(registry_store, tokens=(tag("nothing"),)) == []
    # Tokens of one kind do not find another kind.
    assert await listed(registry_store, CAMPAIGN, tokens=(tag("a"),)) == []


async def test_campaign_and_content_tokens(registry_store: RegistryStore) -> None:
    entities: list[Entity] = [
        Campaign(id="c1", name="Spring", brand="Acme Shoes", influencers=("inf-1", "inf-2")),
        Campaign(id="c2", name="Summer", brand="Acme", link_codes=("SUMMER",), content=("p1",)),
        Content(id="p1", platform="instagram", influencer_id="inf-1", campaign_id="c1"),
        Content(id="p2", platform="tiktok", influencer_id="inf-1", type="reel"),
        Content(id="p3", platform="instagram", influencer_id="inf-12", type="reel"),
    ]
    for entity in entities:
        await registry_store.insert_entity("acme", record(entity))

    assert await listed(registry_store, CAMPAIGN, tokens=(key_token("brand", "Acme"),)) == ["c2"]
    assert await listed(registry_store, CAMPAIGN, tokens=(key_token("brand", "Acme Shoes"),)) == [
        "c1"
    ]
    assert await listed(
        registry_store, CAMPAIGN, tokens=(key_token("influencer_id", "inf-2"),)
    ) == ["c1"]
    assert await listed(registry_store, CAMPAIGN, tokens=(key_token("link_code", "SUMMER"),)) == [
        "c2"
    ]
    assert await listed(registry_store, CONTENT, tokens=(key_token("influencer_id", "inf-1"),)) == [
        "p1",
        "p2",
    ]
    assert await listed(
        registry_store,
        CONTENT,
        tokens=(key_token("type", "reel"), key_token("platform", "instagram")),
    ) == ["p3"]
    assert await listed(registry_store, CONTENT, tokens=(key_token("campaign_id", "c1"),)) == ["p1"]


async def test_search_is_a_literal_substring(registry_store: RegistryStore) -> None:
    entities = [
        influencer("inf-1", name="Ana Makes", accounts=(Account("instagram", "1", "@ana.makes"),)),
        influencer("inf-2", name="Bob Builds"),
        influencer("inf-3", name="Banana Bread"),
        influencer("inf-4", name="a_b 100%"),
        influencer("inf-5", name="axb"),
    ]
    for entity in entities:
        await registry_store.insert_entity("acme", record(entity))

    assert await listed(registry_store, search="ana") == ["inf-1", "inf-3"]
    assert await listed(registry_store, search="@ana.m") == ["inf-1"]
    assert await listed(registry_store, search="builds") == ["inf-2"]
    assert await listed(registry_store, search="inf-") == [
        "inf-1",
        "inf-2",
        "inf-3",
        "inf-4",
        "inf-5",
    ]
    assert await listed(registry_store, search="nobody") == []
    # No pattern characters: '_' and '%' are themselves.
    assert await listed(registry_store, search="a_b") == ["inf-4"]
    assert await listed(registry_store, search="100%") == ["inf-4"]
    assert await listed(registry_store, search="%") == ["inf-4"]
    # The store compares as given; the service lower-cases the query.
    assert await listed(registry_store, search="ANA") == []


async def test_after_tokens_search_and_limit_together(registry_store: RegistryStore) -> None:
    for n in range(8):
        tags = ("even",) if n % 2 == 0 else ("odd",)
        name = f"Creator {n}" if n < 6 else f"Other {n}"
        await registry_store.insert_entity(
            "acme", record(influencer(f"inf-{n}", name=name, tags=tags))
        )

    even = (key_token("tag", "even"),)
    assert await listed(registry_store, tokens=even, search="creator") == [
        "inf-0",
        "inf-2",
        "inf-4",
    ]
    assert await listed(registry_store, tokens=even, search="creator", after="inf-0", limit=1) == [
        "inf-2"
    ]
    assert await listed(registry_store, tokens=even, search="creator", after="inf-2", limit=5) == [
        "inf-4"
    ]
    assert await listed(registry_store, tokens=even, after="inf-3", limit=5) == ["inf-4", "inf-6"]
    assert await listed(registry_store, search="other", after="inf-6", limit=5) == ["inf-7"]
    assert await listed(registry_store, search="other", limit=1) == ["inf-6"]


# -- everything ----------------------------------------------------------------------


async def test_all_entities_of_one_kind_for_one_tenant_and_for_all(
    registry_store: RegistryStore,
) -> None:
    acme = {
        "p1": record(Content(id="p1", platform="instagram", influencer_id="inf-1")),
        "inf-2": record(influencer("inf-2")),
        "c1": record(Campaign(id="c1", name="C")),
        "inf-1": record(influencer("inf-1")),
        "Inf-0": record(influencer("Inf-0")),
    }
    globex = {
        "inf-1": record(influencer("inf-1", name="Globex one")),
        "a-first": record(influencer("a-first")),
    }
    # Inserted out of order, tenants interleaved.
    for key in ("inf-2", "p1", "inf-1", "c1", "Inf-0"):
        await registry_store.insert_entity("acme", acme[key])
        if key in globex:
            await registry_store.insert_entity("globex", globex[key])
    await registry_store.insert_entity("globex", globex["a-first"])
    await registry_store.insert_entity("initech", record(Campaign(id="c9", name="I")))

    # One kind, ordered by tenant then id.
    assert await registry_store.all_entities(INFLUENCER, "acme") == [
        ("acme", acme["Inf-0"]),
        ("acme", acme["inf-1"]),
        ("acme", acme["inf-2"]),
    ]
    assert await registry_store.all_entities(INFLUENCER, "globex") == [
        ("globex", globex["a-first"]),
        ("globex", globex["inf-1"]),
    ]
    assert await registry_store.all_entities(INFLUENCER) == [
        ("acme", acme["Inf-0"]),
        ("acme", acme["inf-1"]),
        ("acme", acme["inf-2"]),
        ("globex", globex["a-first"]),
        ("globex", globex["inf-1"]),
    ]
    assert await registry_store.all_entities(CAMPAIGN, "acme") == [("acme", acme["c1"])]
    assert await registry_store.all_entities(CAMPAIGN) == [
        ("acme", acme["c1"]),
        ("initech", record(Campaign(id="c9", name="I"))),
    ]
    assert await registry_store.all_entities(CONTENT) == [("acme", acme["p1"])]
    assert await registry_store.all_entities(CONTENT, "globex") == []
    assert await registry_store.all_entities(INFLUENCER, "nobody") == []
    assert await registry_store.all_entities("no-such-kind") == []
    # An empty tenant id is a tenant id, not "every tenant".
    assert await registry_store.all_entities(INFLUENCER, "") == []


async def test_records_survive_close_and_reopen(store_backend: Any) -> None:
    store = await store_backend.open_registry_store()
    records = {
        ("acme", "a"): record(influencer("inf-1", tags=("t 1",)), NOW_US),
        ("acme", "b"): record(Campaign(id="c1", name="C", brand="B"), NOW_US + 1),
        ("globex", "a"): record(influencer("inf-1", name="G"), NOW_US + 2),
        ("acme", "c"): record(Content(id="gone", platform="x", influencer_id="inf-1")),
    }
    for (tenant, _), rec in records.items():
        assert await store.insert_entity(tenant, rec) is True
    updated = record(influencer("inf-1", name="Updated", tags=("t 2",)), NOW_US + 50)
    assert await store.update_entity("acme", updated) is True
    assert await store.delete_entity("acme", CONTENT, "gone") is True
    await store.aclose()

    reopened = await store_backend.open_registry_store()
    assert await reopened.get_entity("acme", INFLUENCER, "inf-1") == updated
    assert await reopened.get_entity("acme", CAMPAIGN, "c1") == records[("acme", "b")]
    assert await reopened.get_entity("acme", CONTENT, "gone") is None
    assert await everything(reopened) == [
        ("acme", records[("acme", "b")]),
        ("acme", updated),
        ("globex", records[("globex", "a")]),
    ]
    assert await listed(reopened, tokens=(key_token("tag", "t 2"),)) == ["inf-1"]
    # Still refuses a second insert of what it holds, and accepts new ones.
    assert await reopened.insert_entity("acme", updated) is False
    assert await reopened.insert_entity("acme", record(influencer("inf-3"))) is True
    assert await listed(reopened) == ["inf-1", "inf-3"]


async def test_many_records_list_in_pages_without_loss(registry_store: RegistryStore) -> None:
    names = [f"{a}{b}" for a, b in itertools.product("aZ9", "x-_.")]
    for entity_id in reversed(names):
        await registry_store.insert_entity("acme", record(influencer(entity_id)))
    walked: list[str] = []
    after: str | None = None
    while True:
        page = await listed(registry_store, after=after, limit=5)
        assert len(page) <= 5
        walked.extend(page)
        if len(page) < 5:
            break
        after = page[-1]
    assert walked == sorted(names)
    assert len(set(walked)) == 12


async def test_any_text_is_stored_and_searched(store_backend: Any) -> None:
    """Any text but NUL, which PostgreSQL text cannot hold: the API refuses it (422)."""
    store = await store_backend.open_registry_store()
    odd = record(influencer("inf-odd", name="nul tab\t quote' 🎉 zoë", tags=("a b%",)))
    assert await store.insert_entity("acme", odd) is True
    assert await store.get_entity("acme", INFLUENCER, "inf-odd") == odd
    assert await listed(store, search="nul tab\t") == ["inf-odd"]
    assert await listed(store, search="quote' 🎉") == ["inf-odd"]
    assert await listed(store, tokens=(key_token("tag", "a b%"),)) == ["inf-odd"]
