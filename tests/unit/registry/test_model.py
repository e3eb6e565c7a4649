"""The registry model (pure): records, filter tokens, directories, and how ingest uses them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypemeter.events.model import (
    Directory,
    EventIn,
    EventInvalid,
    MetricCatalog,
    TrackIn,
    ValidationRules,
    to_epoch_us,
    validate_event,
)
from hypemeter.registry.model import (
    Account,
    Campaign,
    Content,
    Entity,
    Influencer,
    Kind,
    RegistryRecord,
    build_directory,
    check_id,
    duplicate_account,
    from_record,
    key_token,
    kind_of,
    normalize_time,
    rfc3339,
    to_record,
)

NOW = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)
NOW_US = to_epoch_us(NOW)
HOUR_US = 3600 * 1_000_000
RULES = ValidationRules(now_us=NOW_US, max_future_us=HOUR_US, retention_us=400 * 24 * HOUR_US)
DECODER = msgspec.json.Decoder(EventIn)
UNRESOLVED = (
    "influencer_id is required, unless content_id or account_id is registered "
    "(/v1/content, /v1/influencers)"
)

ANA = Influencer(
    id="inf-ana",
    name="Ana Makes",
    tags=("beauty", "two words", "100%"),
    accounts=(
        Account("instagram", "1784", handle="@Ana.Makes", followers=184_000),
        Account("tiktok", "tt-9"),
    ),
    created_at="2026-11-20T14:00:00.000000Z",
    updated_at="2026-11-20T14:00:01.000000Z",
)
SPRING = Campaign(
    id="spring",
    name="Spring Launch",
    brand="Acme Shoes",
    start="2026-11-01T00:00:00.000000Z",
    end="2026-12-01T00:00:00.000000Z",
    budget=25_000.5,
    influencers=("inf-ana", "inf-bo"),
    content=("tracked-1", "post-1"),
    link_codes=("SPRING10",),
)
POST = Content(
    id="post-1",
    platform="instagram",
    influencer_id="inf-ana",
    campaign_id="spring",
    url="https://instagram.com/p/ABC",
    published_at="2026-11-02T10:00:00.000000Z",
    type="reel",
)


# -- records -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "kind"),
    [(ANA, Kind.INFLUENCER), (SPRING, Kind.CAMPAIGN), (POST, Kind.CONTENT)],
    ids=["influencer", "campaign", "content"],
)
def test_record_round_trip_of_each_kind(entity: Entity, kind: Kind) -> None:
    rec = to_record(entity, NOW_US)
    assert (rec.kind, rec.entity_id, rec.updated_us) == (kind.value, entity.id, NOW_US)
    assert kind_of(entity) is kind
    back = from_record(rec)
    assert back == entity
    assert type(back) is type(entity)
    assert msgspec.json.decode(rec.doc) == msgspec.json.decode(msgspec.json.encode(entity))


def test_minimal_entities_round_trip_with_their_defaults() -> None:
    for entity in (
        Influencer(id="i", name="N"),
        Campaign(id="c", name="N"),
        Content(id="p", platform="x", influencer_id="i"),
    ):
        rec = to_record(entity, 0)
        assert from_record(rec) == entity
        assert rec.keys in {" ", " influencer_id=i platform=x "}


def test_record_of_one_kind_does_not_decode_as_another() -> None:
    rec = to_record(ANA, NOW_US)
    wrong = RegistryRecord("campaign", rec.entity_id, rec.doc, rec.keys, rec.search, NOW_US)
    with pytest.raises(msgspec.ValidationError):
        from_record(wrong)


def test_influencer_keys_are_sorted_percent_encoded_tokens() -> None:
    keys = to_record(ANA, NOW_US).keys
    assert keys == (
        " account=instagram%3A1784 account=tiktok%3Att-9 platform=instagram platform=tiktok"
        " tag=100%25 tag=beauty tag=two%20words "
    )
    # Every token is found whole by the token of its filter, spaces around it.
    for name, value in [
        ("tag", "two words"),
        ("tag", "100%"),
        ("tag", "beauty"),
        ("platform", "tiktok"),
        ("account", "instagram:1784"),
    ]:
        assert key_token(name, value) in keys
    assert key_token("tag", "two") not in keys
    assert key_token("tag", "words") not in keys
    assert key_token("tag", "beaut") not in keys
    assert key_token("tag", "two words") == " tag=two%20words "
    assert key_token("tag", "a=b c") == " tag=a%3Db%20c "


def test_campaign_and_content_keys() -> None:
    assert to_record(SPRING, NOW_US).keys == (
        " brand=Acme%20Shoes content_id=post-1 content_id=tracked-1 influencer_id=inf-ana"
        " influencer_id=inf-bo link_code=SPRING10 "
    )
    assert to_record(POST, NOW_US).keys == (
        " campaign_id=spring influencer_id=inf-ana platform=instagram type=reel "
    )
    # Unset optional fields give no token at all.
    bare = Content(id="p", platform="tiktok", influencer_id="inf-1")
    assert to_record(bare, NOW_US).keys == " influencer_id=inf-1 platform=tiktok "
    assert to_record(Campaign(id="c", name="C", brand=None), NOW_US).keys == " "


def test_duplicate_values_give_one_token() -> None:
    twice = Influencer(id="i", name="N", tags=("a", "a", "b"))
    assert to_record(twice, 0).keys == " tag=a tag=b "


def test_search_text_is_lower_cased_names_and_handles() -> None:
    assert to_record(ANA, 0).search == "inf-ana\nana makes\n@ana.makes\nana.makes"
    assert to_record(SPRING, 0).search == "spring\nspring launch\nacme shoes"
    assert to_record(POST, 0).search == "post-1\nhttps://instagram.com/p/abc"


# Text msgspec can encode as JSON (no lone surrogates).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@-]{0,20}\Z")
OPTIONAL = st.none() | TEXT
ACCOUNTS = st.builds(
    Account,
    platform=st.sampled_from(["instagram", "tiktok", "x", "youtube"]),
    account_id=TEXT,
    handle=OPTIONAL,
    followers=st.none() | st.integers(min_value=0, max_value=10**12),
)
ENTITIES = st.one_of(
    st.builds(
        Influencer,
        id=IDS,
        name=TEXT,
        tags=st.lists(TEXT, max_size=5).map(tuple),
        accounts=st.lists(ACCOUNTS, max_size=3).map(tuple),
        created_at=TEXT,
        updated_at=TEXT,
    ),
    st.builds(
        Campaign,
        id=IDS,
        name=TEXT,
        brand=OPTIONAL,
        start=OPTIONAL,
        end=OPTIONAL,
        budget=st.none() | st.floats(allow_nan=False, allow_infinity=False),
        influencers=st.lists(IDS, max_size=4).map(tuple),
        content=st.lists(TEXT, max_size=4).map(tuple),
        link_codes=st.lists(TEXT, max_size=4).map(tuple),
    ),
    st.builds(
        Content,
        id=TEXT.filter(bool),
        platform=st.sampled_from(["instagram", "tiktok"]),
        influencer_id=IDS,
        campaign_id=st.none() | IDS,
        url=OPTIONAL,
        published_at=OPTIONAL,
        type=OPTIONAL,
    ),
)


@given(entity=ENTITIES, updated_us=st.integers(min_value=0, max_value=2**62))
def test_any_entity_survives_its_record(entity: Entity, updated_us: int) -> None:
    rec = to_record(entity, updated_us)
    assert from_record(rec) == entity
    assert rec.updated_us == updated_us
    assert rec.search == rec.search.lower()
    assert rec.keys.startswith(" ") and rec.keys.endswith(" ")


@given(tags=st.lists(TEXT, max_size=6), probe=TEXT.filter(bool))
def test_a_tag_token_is_found_exactly_when_the_tag_is_held(tags: list[str], probe: str) -> None:
    keys = to_record(Influencer(id="i", name="n", tags=tuple(tags)), 0).keys
    assert (key_token("tag", probe) in keys) == (probe in tags)


# -- small rules ---------------------------------------------------------------------


def test_check_id() -> None:
    assert check_id("inf-42", "id") == "inf-42"
    assert check_id("a" * 128, "id") == "a" * 128
    for bad in ("", "-lead", "a" * 129, "has space", "slash/no"):
        with pytest.raises(ValueError, match=r"^id must be 1-128 letters"):
            check_id(bad, "id")


def test_times() -> None:
    assert rfc3339(NOW_US + 5) == "2026-11-20T14:00:00.000005Z"
    assert normalize_time(None) is None
    offset = dt.datetime(2026, 11, 20, 16, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert normalize_time(offset) == "2026-11-20T14:00:00.000000Z"
    with pytest.raises(ValueError, match="UTC offset"):
        normalize_time(dt.datetime(2026, 11, 20, 14, 0))


def test_times_before_the_year_1000_are_zero_padded() -> None:
    early = dt.datetime(999, 6, 1, tzinfo=dt.UTC)
    assert normalize_time(early) == "0999-06-01T00:00:00.000000Z"
    assert rfc3339(to_epoch_us(early)) == "0999-06-01T00:00:00.000000Z"


def test_duplicate_account_names_the_second_listing() -> None:
    assert duplicate_account(ANA) is None
    same_id_other_platform = Influencer(
        id="i", name="n", accounts=(Account("instagram", "1"), Account("tiktok", "1"))
    )
    assert duplicate_account(same_id_other_platform) is None
    twice = Influencer(
        id="i",
        name="n",
        accounts=(Account("x", "0"), Account("instagram", "1"), Account("instagram", "1", "@h")),
    )
    assert duplicate_account(twice) == 2


# -- directories ---------------------------------------------------------------------


def test_an_empty_registry_has_no_directory() -> None:
    assert build_directory([]) is None
    # Nothing an event could be resolved by: no content, no account.
    assert build_directory([Influencer(id="i", name="n"), Campaign(id="c", name="n")]) is None


def test_directory_of_content_accounts_and_tracked_content() -> None:
    bo = Influencer(id="inf-bo", name="Bo", accounts=(Account("youtube", "UC1"),))
    loose = Content(id="loose", platform="tiktok", influencer_id="inf-bo")
    directory = build_directory([ANA, bo, SPRING, POST, loose])
    assert directory == Directory(
        content={
            "post-1": ("inf-ana", "spring"),  # its own campaign
            "loose": ("inf-bo", None),
            "tracked-1": (None, "spring"),  # tracked by a campaign, not registered
        },
        accounts={
            ("instagram", "1784"): "inf-ana",
            ("tiktok", "tt-9"): "inf-ana",
            ("youtube", "UC1"): "inf-bo",
        },
    )


def test_a_campaign_tracking_content_gives_content_its_campaign() -> None:
    untagged = Content(id="p9", platform="instagram", influencer_id="inf-ana")
    tracker = Campaign(id="fall", name="Fall", content=("p9",))
    orders: list[list[Entity]] = [[untagged, tracker], [tracker, untagged]]
    for order in orders:
        directory = build_directory(order)
        assert directory is not None
        assert directory.content == {"p9": ("inf-ana", "fall")}


def test_content_naming_its_campaign_wins_over_a_tracking_campaign() -> None:
    own = Content(id="p1", platform="instagram", influencer_id="inf-ana", campaign_id="own")
    tracker = Campaign(id="tracker", name="T", content=("p1",))
    directory = build_directory([tracker, own])
    assert directory is not None
    assert directory.content == {"p1": ("inf-ana", "own")}


def test_of_two_campaigns_tracking_one_content_the_first_listed_gives_it() -> None:
    first = Campaign(id="a", name="A", content=("p1",))
    second = Campaign(id="b", name="B", content=("p1",))
    directory = build_directory([first, second])
    assert directory is not None
    assert directory.content == {"p1": (None, "a")}


DIRECTORY = Directory(
    content={
        "post-1": ("inf-ana", "spring"),
        "post-2": ("inf-ana", None),
        "tracked-1": (None, "spring"),
    },
    accounts={("instagram", "1784"): "inf-ana", ("tiktok", "tt-9"): "inf-tt"},
)


def payload(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "platform": "instagram",
        "metric": "likes",
        "ts": "2026-11-20T13:59:00Z",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def decode(**fields: Any) -> EventIn:
    return DECODER.decode(msgspec.json.encode(payload(**fields)))


def admit(directory: Directory | None = DIRECTORY, **fields: Any) -> EventIn:
    event = decode(**fields)
    assert validate_event(event, MetricCatalog(), RULES, directory) == NOW_US - 60_000_000
    return event


def rejected(directory: Directory | None = DIRECTORY, **fields: Any) -> EventInvalid:
    with pytest.raises(EventInvalid) as caught:
        validate_event(decode(**fields), MetricCatalog(), RULES, directory)
    return caught.value


def test_fill_gives_influencer_and_campaign_of_registered_content() -> None:
    event = admit(content_id="post-1")
    assert (event.influencer_id, event.campaign_id) == ("inf-ana", "spring")
    no_campaign = admit(content_id="post-2")
    assert (no_campaign.influencer_id, no_campaign.campaign_id) == ("inf-ana", None)


def test_fill_gives_the_influencer_of_an_account_on_the_normalised_platform() -> None:
    event = admit(platform="IG", account_id="1784")
    assert (event.platform, event.influencer_id, event.campaign_id) == (
        "instagram",
        "inf-ana",
        None,
    )
    assert admit(platform="TT", account_id="tt-9").influencer_id == "inf-tt"
    # Directory.fill itself looks up the platform as given: validate_event normalises first.
    raw = decode(platform="IG", account_id="1784")
    DIRECTORY.fill(raw)
    assert raw.influencer_id is None
    # An account id is per platform.
    assert rejected(platform="tiktok", account_id="1784").field == "influencer_id"


def test_content_tracked_by_a_campaign_takes_the_influencer_from_the_account() -> None:
    event = admit(content_id="tracked-1", account_id="1784")
    assert (event.influencer_id, event.campaign_id) == ("inf-ana", "spring")
    # Without an account, nothing names its influencer.
    error = rejected(content_id="tracked-1")
    assert (error.field, error.message) == ("influencer_id", UNRESOLVED)


def test_content_wins_over_account() -> None:
    event = admit(platform="tiktok", content_id="post-1", account_id="tt-9")
    assert (event.influencer_id, event.campaign_id) == ("inf-ana", "spring")


def test_explicit_influencer_and_campaign_are_never_overwritten() -> None:
    event = admit(influencer_id="inf-own", campaign_id="camp-own", content_id="post-1")
    assert (event.influencer_id, event.campaign_id) == ("inf-own", "camp-own")
    by_account = admit(influencer_id="inf-own", account_id="1784")
    assert by_account.influencer_id == "inf-own"
    # An explicit influencer keeps the content's campaign filled in where none is given.
    partial = admit(influencer_id="inf-own", content_id="post-1")
    assert (partial.influencer_id, partial.campaign_id) == ("inf-own", "spring")
    only_campaign = admit(campaign_id="camp-own", content_id="post-1")
    assert (only_campaign.influencer_id, only_campaign.campaign_id) == ("inf-ana", "camp-own")
    # An explicit influencer needs no registered content.
    unknown = admit(influencer_id="inf-own", content_id="never-registered")
    assert (unknown.influencer_id, unknown.campaign_id) == ("inf-own", None)


def test_unresolvable_events_are_invalid_for_influencer_id() -> None:
    cases: list[dict[str, Any]] = [
        {"content_id": "never-registered"},
        {"account_id": "no-such-account"},
        {"content_id": "never-registered", "account_id": "no-such-account"},
        {},
    ]
    for fields in cases:
        error = rejected(DIRECTORY, **fields)
        assert (error.field, error.message) == ("influencer_id", UNRESOLVED), fields


def test_without_a_directory_influencer_id_is_required_as_before() -> None:
    error = rejected(None)
    assert (error.field, error.message) == ("influencer_id", "influencer_id is required")
    # Checked before anything else, as before registries.
    error = rejected(None, platform="myspace", metric="nope")
    assert (error.field, error.message) == ("influencer_id", "influencer_id is required")
    # An event that names a content item or an account learns how it could be resolved.
    for fields in ({"content_id": "post-1"}, {"account_id": "1784"}):
        error = rejected(None, **fields)
        assert (error.field, error.message) == ("influencer_id", UNRESOLVED), fields
    event = admit(None, influencer_id="inf-1", content_id="post-1")
    assert (event.influencer_id, event.campaign_id) == ("inf-1", None)


def test_other_fields_are_still_checked_after_the_directory() -> None:
    assert rejected(content_id="post-1", platform=None).field == "platform"
    assert rejected(content_id="post-1", platform="myspace").field == "platform"
    assert rejected(content_id="post-1", metric="nope").field == "metric"
    assert rejected(content_id="post-1", ts="2020-01-01T00:00:00Z").field == "ts"


def test_account_id_is_accepted_on_the_wire_and_by_track() -> None:
    event = decode(influencer_id="inf-1", account_id="acc-1")
    assert event.account_id == "acc-1"
    with pytest.raises(msgspec.ValidationError, match="account_id"):
        decode(influencer_id="inf-1", account_id="")
    track = msgspec.json.decode(b'{"account_id": "1784", "content_id": "post-9"}', type=TrackIn)
    tracked = track.to_event("likes", NOW)
    assert (tracked.account_id, tracked.platform, tracked.ts) == ("1784", "app", NOW)
    on_instagram = msgspec.structs.replace(tracked, platform="instagram")
    assert validate_event(on_instagram, MetricCatalog(), RULES, DIRECTORY) == NOW_US
    assert on_instagram.influencer_id == "inf-ana"
