"""EventStore.erase_influencer: an erased influencer leaves no trace in any answer.

An influencer ("zed") is added to every dataset of the metrics suite, sharing
hours, platforms, campaigns and content with the others, partly before and partly
after the rollups fold; erasing them must give back exactly the answers of the
datasets without them, as committed and once folded.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from hypemeter.connectors.letters import DeadLetterArchive
from hypemeter.connectors.model import DEAD_LETTER, DeadLetter, letter_record
from hypemeter.events.ports import EventStore
from hypemeter.metrics.model import DAY_US
from hypemeter.metrics.ports import MetricsStore
from hypemeter.metrics.queries import GaugeQuery
from hypemeter.privacy import service as privacy_service
from hypemeter.privacy.model import RetentionPolicy
from hypemeter.privacy.service import PrivacyService
from hypemeter.registry.ports import RegistryStore
from hypemeter.registry.service import Erasure

from .conftest import NOW_US
from .test_metrics_store_contract import (
    DAY0,
    append,
    at,
    event,
    everything,
    load_everything,
)

TENANTS = ("counted", "gauged", "users", "trending", "archive")

# (tenant, event id, platform, metric, value, ts, extra fields): hours, campaigns and
# content the datasets' own events use too.
ZED_FOLDED = (
    ("counted", "z1", "instagram", "likes", 1000, at(0, 10, 7), {"campaign_id": "c1"}),
    ("counted", "z2", "tiktok", "comments", 2000, at(2, 9, 20), {"content_id": "p2"}),
    ("users", "z3", "instagram", "likes", 3, at(0, 10, 5), {"user_id": "u9", "content_id": "p1"}),
    (
        "trending",
        "z4",
        "instagram",
        "comments",
        7,
        at(1, 10, 45),
        {"content_id": "p1", "text": "zzz latest", "tags": ["b", "zed"]},
    ),
    ("gauged", "z5", "instagram", "followers", 5000, at(1, 9), {"kind": "snapshot"}),
)
ZED_UNFOLDED = (
    ("counted", "z6", "instagram", "likes", 4000, at(1, 13, 31), {"campaign_id": "c1"}),
    (
        "trending",
        "z7",
        "tiktok",
        "saves",
        9,
        at(1, 12, 30),
        {"content_id": "p2", "text": "zed's", "tags": ["x"]},
    ),
    ("gauged", "z8", "instagram", "followers", 5100, at(2, 9), {"kind": "snapshot"}),
    ("archive", "z9", "x", "likes", 1, at(-40), {}),
)


async def add_zed(store: EventStore, rows: tuple[tuple[Any, ...], ...]) -> None:
    for tenant, event_id, platform, metric, value, ts, fields in rows:
        await append(store, tenant, [event(event_id, "zed", platform, metric, value, ts, **fields)])


async def test_erasing_an_influencer_gives_back_the_answers_without_them(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    stored = await load_everything(event_store)
    without = await everything(metrics_store)
    await add_zed(event_store, ZED_FOLDED)
    await store_backend.fold_rollups(metrics_store)
    await add_zed(event_store, ZED_UNFOLDED)
    # zed shows in the answers now (the checks of the suite assert the datasets' values).
    with pytest.raises(AssertionError):
        await everything(metrics_store)
    counts = [await event_store.count_events(t) for t in TENANTS]
    assert sum(counts) == stored + len(ZED_FOLDED) + len(ZED_UNFOLDED)

    erased = [await event_store.erase_influencer(t, "zed") for t in TENANTS]
    assert erased == [3, 2, 1, 2, 1]
    assert sum([await event_store.count_events(t) for t in TENANTS]) == stored
    assert await everything(metrics_store) == without
    await store_backend.fold_rollups(metrics_store)
    assert await everything(metrics_store) == without


async def test_erasure_is_per_tenant_and_per_influencer(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await append(event_store, "acme", [event("a", "zed", "x", "likes", 1, at(1))])
    await append(event_store, "acme", [event("b", "ana", "x", "likes", 2, at(1))])
    await append(event_store, "other", [event("a", "zed", "x", "likes", 4, at(1))])
    await store_backend.fold_rollups(metrics_store)
    assert await event_store.erase_influencer("acme", "zed") == 1
    assert await event_store.erase_influencer("acme", "zed") == 0
    assert await event_store.erase_influencer("acme", "nobody") == 0
    assert await event_store.count_events("acme") == 1
    assert await event_store.count_events("other") == 1


async def test_readings_after_an_erasure_start_from_zero(
    store_backend: Any, event_store: EventStore
) -> None:
    def follower(event_id: str, value: float, ts: int) -> Any:
        return event(event_id, "zed", "instagram", "followers", value, ts, kind="snapshot")

    await append(event_store, "acme", [follower("r1", 900, at(1, 1))])
    await append(event_store, "acme", [follower("r2", 1000, at(1, 2))])
    assert await event_store.erase_influencer("acme", "zed") == 2
    await append(event_store, "acme", [follower("r3", 300, at(1, 3))])
    deltas = await store_backend.stored_deltas(event_store, "acme")
    assert deltas == {"r3": 300}


async def test_gauges_forget_the_erased_influencer(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await append(
        event_store,
        "acme",
        [
            event("r1", "zed", "instagram", "followers", 900, at(1, 1), kind="snapshot"),
            event("r2", "ana", "instagram", "followers", 50, at(1, 1), kind="snapshot"),
        ],
    )
    await store_backend.fold_rollups(metrics_store)
    await event_store.erase_influencer("acme", "zed")
    query = GaugeQuery(start_us=DAY0, end_us=DAY0 + 3 * DAY_US, metrics=("followers",))
    answer = await metrics_store.gauges("acme", query)
    assert {row.influencer_id for row in answer.rows} == {"ana"}


def letter(letter_id: str, body: bytes) -> DeadLetter:
    return DeadLetter(
        id=letter_id,
        connector_id="con_1",
        platform="instagram",
        received_us=NOW_US,
        reasons=("unknown field",),
        headers={},
        body_b64=base64.b64encode(body).decode(),
    )


def meta_delivery(account: str) -> bytes:
    entry = {"id": account, "changes": [{"field": "reel_remixes", "value": {"text": "hi"}}]}
    return json.dumps({"object": "instagram", "entry": [entry]}).encode()


# The letters of "acme": which name zed (id "zed", accounts "1784" and "UCzed").
LETTERS = {
    "dl_1": (meta_delivery("1784"), True),  # their Instagram account's entry
    "dl_2": (json.dumps({"data": [{"user": "zed", "n": 1}]}).encode(), True),  # their id
    "dl_3": (b"<feed><yt:channelId>UCzed</yt:channelId></feed>", True),  # Atom, not JSON
    "dl_4": (json.dumps({"entry": [{"id": 1784}]}).encode(), True),  # the id as a number
    "dl_5": (meta_delivery("17845"), False),  # another account, whose id starts alike
    "dl_6": (b"<feed><yt:channelId>UCzed-2</yt:channelId></feed>", False),  # a longer id
    "dl_7": (json.dumps({"text": "zed is great"}).encode(), False),  # not a whole value
}


@pytest.mark.parametrize("page", [500, 2])  # 2: the letters are read over several pages
async def test_erasing_an_influencer_erases_the_dead_letters_naming_them(
    store_backend: Any,
    event_store: EventStore,
    documents: RegistryStore,
    page: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(privacy_service, "LETTERS_PER_STEP", page)
    await append(
        event_store, "acme", [event("c1", "zed", "instagram", "comments", 1, at(1), text="hi")]
    )
    for letter_id, (body, _) in LETTERS.items():
        await documents.insert_entity("acme", letter_record(letter(letter_id, body), NOW_US))
    await documents.insert_entity("other", letter_record(letter("dl_1", LETTERS["dl_1"][0]), 1))
    privacy = PrivacyService(
        event_store,
        DeadLetterArchive(documents),
        store_backend.clock,
        RetentionPolicy(retention_days=400, dead_letter_days=30),
        interval_s=3600,
    )
    assert await privacy.erase(Erasure("acme", "zed", ("1784", "UCzed"))) == 1
    left = await documents.all_entities(DEAD_LETTER)
    kept = sorted(letter_id for letter_id, (_, named) in LETTERS.items() if not named)
    assert [(t, r.entity_id) for t, r in left] == [
        *(("acme", letter_id) for letter_id in kept),
        ("other", "dl_1"),  # another tenant's letter is no business of this erasure
    ]
    assert await event_store.count_events("acme") == 0
