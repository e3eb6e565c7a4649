"""A key's limits: parsing and checking against its scopes, storage form, and how they
narrow reads (``read_refusal``)."""

from __future__ import annotations

from typing import Any

import pytest

from hypemeter.auth.model import (
    MAX_LIMIT_IDS,
    NO_LIMITS,
    TENANT_WIDE,
    KeyLimits,
    LimitsInvalid,
    ReadNarrowing,
    Scope,
    limits_from_json,
    limits_to_json,
    parse_limits,
    read_refusal,
)

INGEST = frozenset({Scope.INGEST})
READ = frozenset({Scope.READ})
BOTH = frozenset({Scope.INGEST, Scope.READ})


def test_no_limits_and_an_empty_object_are_the_same() -> None:
    assert parse_limits(None, INGEST) is NO_LIMITS
    assert parse_limits({}, READ) == NO_LIMITS
    assert NO_LIMITS.unlimited and not NO_LIMITS.narrows_reads
    assert NO_LIMITS.payload() is None


def test_platforms_and_metrics_are_normalised() -> None:
    limits = parse_limits(
        {"platforms": ["IG", "ios", "web"], "metrics": ["Link-Click", "likes", "story_replies"]},
        INGEST,
    )
    assert limits.platforms == {"instagram", "app", "web"}
    assert limits.metrics == {"clicks", "likes", "story_replies"}
    assert not limits.narrows_reads


def test_every_limit_together() -> None:
    raw = {
        "platforms": ["app"],
        "metrics": ["clicks"],
        "influencers": ["inf-1", "inf-1", "inf-2"],
        "campaigns": ["summer"],
        "max_value": 250,
    }
    limits = parse_limits(raw, INGEST)
    assert limits == KeyLimits(
        platforms=frozenset({"app"}),
        metrics=frozenset({"clicks"}),
        influencers=frozenset({"inf-1", "inf-2"}),
        campaigns=frozenset({"summer"}),
        max_value=250.0,
    )
    assert limits.payload() == {**raw, "influencers": ["inf-1", "inf-2"], "max_value": 250.0}


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ("all", "limits", "must be an object"),
        ({"tenants": ["x"]}, "limits.tenants", "unknown limit 'tenants'"),
        ({"platforms": ["myspace"]}, "limits.platforms", "unknown platform 'myspace'"),
        ({"platforms": "app"}, "limits.platforms", "non-empty list"),
        ({"influencers": []}, "limits.influencers", "non-empty list"),
        ({"campaigns": [7]}, "limits.campaigns", "must hold strings"),
        ({"influencers": [""]}, "limits.influencers", "1-256 characters"),
        ({"influencers": ["x" * 257]}, "limits.influencers", "1-256 characters"),
        (
            {"influencers": [f"i{n}" for n in range(MAX_LIMIT_IDS + 1)]},
            "limits.influencers",
            f"at most {MAX_LIMIT_IDS}",
        ),
        ({"metrics": ["not a metric!"]}, "limits.metrics", "metric 'not a metric!'"),
        ({"max_value": 0}, "limits.max_value", "above 0"),
        ({"max_value": -5}, "limits.max_value", "above 0"),
        ({"max_value": 1e16}, "limits.max_value", "at most 1e+15"),
        ({"max_value": float("inf")}, "limits.max_value", "above 0"),
        ({"max_value": True}, "limits.max_value", "must be a number"),
        ({"max_value": "9"}, "limits.max_value", "must be a number"),
    ],
)
def test_bad_limits_are_refused_naming_the_member(raw: Any, field: str, words: str) -> None:
    with pytest.raises(LimitsInvalid) as refused:
        parse_limits(raw, INGEST)
    assert refused.value.field == field
    assert words in refused.value.message


def test_an_admin_key_cannot_be_limited() -> None:
    with pytest.raises(LimitsInvalid) as refused:
        parse_limits({"influencers": ["inf-1"]}, frozenset({Scope.ADMIN, Scope.READ}))
    assert refused.value.field == "limits"
    assert "admin" in refused.value.message
    assert parse_limits({}, frozenset({Scope.ADMIN})) == NO_LIMITS


@pytest.mark.parametrize("raw", [{"platforms": ["app"]}, {"metrics": ["likes"]}, {"max_value": 5}])
def test_a_read_key_takes_only_the_limits_reads_honour(raw: dict[str, Any]) -> None:
    with pytest.raises(LimitsInvalid) as refused:
        parse_limits({"influencers": ["inf-1"], **raw}, BOTH)
    assert refused.value.field == "limits"
    assert "influencers and campaigns only" in refused.value.message
    narrowed = parse_limits({"influencers": ["inf-1"], "campaigns": ["c"]}, BOTH)
    assert narrowed.narrows_reads


def test_the_storage_form_round_trips() -> None:
    limits = parse_limits(
        {"platforms": ["app"], "influencers": ["b", "a", "☃"], "max_value": 1.5}, INGEST
    )
    text = limits_to_json(limits)
    assert text is not None
    assert limits_from_json(text) == limits
    assert limits_to_json(NO_LIMITS) is None
    assert limits_from_json(None) == NO_LIMITS
    assert limits_from_json("") == NO_LIMITS


BY_INFLUENCER = ReadNarrowing(influencer="influencer_id", campaign="campaign_id")
BY_CAMPAIGN = ReadNarrowing(campaign="campaign_id")
ROUTE = "GET /v1/x"
INFLUENCERS = KeyLimits(influencers=frozenset({"inf-1", "inf-2"}))
CAMPAIGNS = KeyLimits(campaigns=frozenset({"summer"}))


def test_unlimited_keys_read_everything() -> None:
    assert read_refusal(NO_LIMITS, TENANT_WIDE, {}, ROUTE) is None
    ingest_only = KeyLimits(platforms=frozenset({"app"}), max_value=3.0)
    assert read_refusal(ingest_only, TENANT_WIDE, {}, ROUTE) is None


def test_a_route_that_reads_the_whole_tenant_is_closed_to_a_narrowed_key() -> None:
    for limits, kind in ((INFLUENCERS, "influencers"), (CAMPAIGNS, "campaigns")):
        refusal = read_refusal(limits, TENANT_WIDE, {}, ROUTE)
        assert refusal == (
            f"limits.{kind}",
            f"this key may read only some {kind} (limits.{kind}); GET /v1/x reads across "
            "them, so it is not open to this key",
        )
    # A campaign filter does not narrow to influencers.
    refusal = read_refusal(INFLUENCERS, BY_CAMPAIGN, {"campaign_id": ["summer"]}, ROUTE)
    assert refusal is not None and refusal[0] == "limits.influencers"


def test_a_route_naming_an_allowed_id_is_open() -> None:
    assert read_refusal(INFLUENCERS, BY_INFLUENCER, {"influencer_id": ["inf-2"]}, ROUTE) is None
    assert read_refusal(CAMPAIGNS, BY_CAMPAIGN, {"campaign_id": ["summer"]}, ROUTE) is None
    assert read_refusal(INFLUENCERS, ReadNarrowing(checked_by_route=True), {}, ROUTE) is None


def test_another_id_a_missing_one_or_two_of_them_are_refused() -> None:
    assert read_refusal(INFLUENCERS, BY_INFLUENCER, {"influencer_id": ["inf-3"]}, ROUTE) == (
        "limits.influencers",
        "influencer_id 'inf-3' is outside this key's limits.influencers",
    )
    for values in ([], ["inf-1", "inf-2"]):
        refusal = read_refusal(INFLUENCERS, BY_INFLUENCER, {"influencer_id": values}, ROUTE)
        assert refusal == (
            "limits.influencers",
            "this key may read only some influencers (limits.influencers): pass one influencer_id",
        )


def test_both_limits_must_hold_at_once() -> None:
    both = KeyLimits(influencers=frozenset({"inf-1"}), campaigns=frozenset({"summer"}))
    allowed = {"influencer_id": ["inf-1"], "campaign_id": ["summer"]}
    assert read_refusal(both, BY_INFLUENCER, allowed, ROUTE) is None
    no_campaign = read_refusal(both, BY_INFLUENCER, {"influencer_id": ["inf-1"]}, ROUTE)
    assert no_campaign is not None and no_campaign[0] == "limits.campaigns"
    other = read_refusal(both, BY_INFLUENCER, {**allowed, "campaign_id": ["winter"]}, ROUTE)
    assert other == (
        "limits.campaigns",
        "campaign_id 'winter' is outside this key's limits.campaigns",
    )
    assert read_refusal(both, BY_CAMPAIGN, {"campaign_id": ["summer"]}, ROUTE) is not None
