"""Retention: purging what is past it changes no answer inside it; run against every backend.

Events of days before the cutoff, sharing influencers, platforms, campaigns, content,
users and tags with the datasets of the metrics suite, partly folded into the rollups
and partly not, are purged day by day: every answer of the suite stays the same, a
range over the purged days holds only what is left, and of each snapshot series the
newest reading before the cutoff stays (a gauge's value at the start of a range).
"""

from __future__ import annotations

from typing import Any

from hypemeter.connectors.letters import DeadLetterArchive
from hypemeter.connectors.model import DEAD_LETTER, letter_record
from hypemeter.events.ports import EventStore, ExpiredDay
from hypemeter.metrics.ports import MetricsStore
from hypemeter.privacy.model import RetentionPolicy
from hypemeter.privacy.service import PrivacyService
from hypemeter.registry.model import RegistryRecord
from hypemeter.registry.ports import RegistryStore

from .conftest import NOW_US
from .test_erasure_contract import letter
from .test_metrics_store_contract import (
    ANA_IG,
    BEN_IG,
    HOUR,
    WHOLE_DAYS,
    accounts,
    append,
    at,
    both_ways,
    counters,
    event,
    everything,
    gauges,
    load_everything,
    summed,
)

# Day -1 starts where a retention of 3 days cuts at the harness's now (day 2, 14:00).
CUTOFF = at(-1)
SPAN = (at(-15), at(3))  # from before every old event to after every dataset's
DAILY = counters(SPAN, by=("platform",), grain=HOUR, metrics=("likes", "comments"))

# (tenant, event id, influencer, platform, metric, value, ts, extra fields)
OLD_FOLDED = (
    ("counted", "o1", "ana", "instagram", "likes", 4096, at(-12, 10, 5), {"campaign_id": "c1"}),
    ("counted", "o2", "ben", "tiktok", "comments", 8192, at(-12, 23, 59), {"content_id": "p3"}),
    ("users", "o3", "ana", "instagram", "likes", 5, at(-11, 1), {"user_id": "u1"}),
    (
        "trending",
        "o4",
        "ana",
        "instagram",
        "comments",
        3,
        at(-11, 10),
        {"content_id": "p1", "text": "old words", "tags": ["b"]},
    ),
)
OLD_UNFOLDED = (
    ("counted", "o5", "ana", "instagram", "likes", 16384, at(-3, 13), {"campaign_id": "c1"}),
    ("users", "o6", "ben", "tiktok", "shares", 2, at(-2, 23, 59, 59), {"user_id": "u2"}),
    # A reading of a series no dataset reads: the newest before the cutoff, so it stays.
    ("counted", "o7", "ana", "x", "followers", 10, at(-2, 4), {"kind": "snapshot"}),
)


async def add_old(store: EventStore, rows: tuple[tuple[Any, ...], ...]) -> None:
    for tenant, event_id, influencer, platform, metric, value, ts, fields in rows:
        await append(
            store, tenant, [event(event_id, influencer, platform, metric, value, ts, **fields)]
        )


async def purge(store: EventStore, cutoff: int) -> list[ExpiredDay]:
    days = await store.expired_days(cutoff)
    for day in days:
        assert await store.purge_day(day.tenant_id, day.day_us, cutoff) == day.events
    return days


async def test_purging_the_days_past_the_cutoff_changes_no_answer_inside_it(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    stored = await load_everything(event_store)
    without = await everything(metrics_store)
    span_without = await summed(metrics_store, "counted", DAILY)
    await add_old(event_store, OLD_FOLDED)
    await store_backend.fold_rollups(metrics_store)
    await add_old(event_store, OLD_UNFOLDED)
    assert await summed(metrics_store, "counted", DAILY) != span_without

    days = await purge(event_store, CUTOFF)
    # One step per tenant and day, oldest first; the kept reading is no step's.
    assert [(d.tenant_id, d.day_us, d.events) for d in days] == [
        ("archive", at(-40), 1),
        ("counted", at(-12), 2),
        ("trending", at(-11), 1),
        ("users", at(-11), 1),
        ("counted", at(-3), 1),
        ("users", at(-2), 1),
    ]
    assert await event_store.expired_days(CUTOFF) == []
    assert await event_store.count_events("archive") == 0
    tenants = ("counted", "gauged", "users", "trending", "archive")
    # The datasets' events but the archive's month-old one, and the kept reading o7.
    assert sum([await event_store.count_events(t) for t in tenants]) == stored - 1 + 1

    async def check() -> list[Any]:
        assert await everything(metrics_store) == without
        assert await summed(metrics_store, "counted", DAILY) == span_without
        return [span_without]

    await both_ways(store_backend, metrics_store, check)


def follower(event_id: str, influencer: str, value: float, ts: int) -> Any:
    return event(event_id, influencer, "instagram", "followers", value, ts, kind="snapshot")


async def test_the_newest_reading_before_the_cutoff_of_each_series_stays(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await append(event_store, "acme", [follower("r1", "ana", 900, at(-10, 8))])
    await append(event_store, "acme", [follower("r2", "ana", 1000, at(-5, 8))])
    await append(event_store, "acme", [follower("r3", "ben", 50, at(-8, 8))])
    await append(event_store, "acme", [event("l1", "ana", "instagram", "likes", 7, at(-5, 9))])
    await store_backend.fold_rollups(metrics_store)
    await append(event_store, "acme", [follower("r4", "ana", 1100, at(1, 8))])
    recent = gauges((at(0), at(2)), HOUR)
    before = await accounts(metrics_store, "acme", recent)
    assert before[ANA_IG].at_start == (at(-5, 8), 1000)
    assert before[BEN_IG].at_start == (at(-8, 8), 50)

    days = await purge(event_store, CUTOFF)
    assert [(d.day_us, d.events) for d in days] == [(at(-10), 1), (at(-5), 1)]
    assert await event_store.count_events("acme") == 3

    async def check() -> Any:
        found = await accounts(metrics_store, "acme", recent)
        assert found == before
        whole = await summed(metrics_store, "acme", counters((at(-15), at(3)), metrics=("likes",)))
        assert whole == {}
        return found

    await both_ways(store_backend, metrics_store, check)

    # A later cutoff: ana's reading of day -5 gives way to a newer one before it.
    await append(event_store, "acme", [follower("r5", "ana", 1050, at(-1, 8))])
    days = await purge(event_store, at(0))
    assert [(d.day_us, d.events) for d in days] == [(at(-5), 1)]
    found = await accounts(metrics_store, "acme", gauges((at(1), at(2)), HOUR))
    assert found[ANA_IG].at_start == (at(-1, 8), 1050)
    assert found[BEN_IG].at_start == (at(-8, 8), 50)
    assert await event_store.count_events("acme") == 3


async def test_registry_purge_deletes_a_kinds_documents_changed_before_a_time(
    documents: RegistryStore,
) -> None:
    day = 86_400_000_000
    for tenant, letter_id, age_days in (
        ("acme", "dl_1", 5),
        ("acme", "dl_2", 1),
        ("beta", "dl_3", 9),
    ):
        await documents.insert_entity(
            tenant, letter_record(letter(letter_id, b"{}"), NOW_US - age_days * day)
        )
    old_other = RegistryRecord("campaign", "c1", "{}", "", "c1", NOW_US - 9 * day)
    await documents.insert_entity("acme", old_other)

    first = await documents.purge_entities(DEAD_LETTER, NOW_US - 2 * day, limit=1)
    rest = await documents.purge_entities(DEAD_LETTER, NOW_US - 2 * day, limit=10)
    assert sorted(first + rest) == ["acme", "beta"]
    assert len(first) == 1
    assert await documents.purge_entities(DEAD_LETTER, NOW_US - 2 * day, limit=10) == []
    left = await documents.all_entities(DEAD_LETTER)
    assert [(t, r.entity_id) for t, r in left] == [("acme", "dl_2")]
    assert await documents.get_entity("acme", "campaign", "c1") == old_other


async def test_a_purge_pass_deletes_expired_days_and_letters_per_tenant(
    store_backend: Any,
    event_store: EventStore,
    metrics_store: MetricsStore,
    documents: RegistryStore,
) -> None:
    day = 86_400_000_000
    await add_old(event_store, OLD_FOLDED)
    await append(event_store, "counted", [event("n1", "ana", "x", "likes", 1, at(1))])
    await documents.insert_entity("acme", letter_record(letter("dl_1", b"{}"), NOW_US - 3 * day))
    await documents.insert_entity("acme", letter_record(letter("dl_2", b"{}"), NOW_US - day))
    privacy = PrivacyService(
        event_store,
        DeadLetterArchive(documents),
        store_backend.clock,
        RetentionPolicy(retention_days=3, dead_letter_days=2),
        interval_s=3600,
    )
    report = await privacy.purge()
    assert report.cutoff_us == CUTOFF
    assert dict(report.events) == {"counted": 2, "users": 1, "trending": 1}
    assert dict(report.dead_letters) == {"acme": 1}
    assert privacy.last == report
    assert await event_store.count_events("counted") == 1
    assert [r.entity_id for _, r in await documents.all_entities(DEAD_LETTER)] == ["dl_2"]
    again = await privacy.purge()
    assert (dict(again.events), dict(again.dead_letters)) == ({}, {})
    assert await summed(metrics_store, "counted", counters(WHOLE_DAYS, metrics=("likes",))) == {
        ((), None, "likes"): (1, 1)
    }
