"""What a live caller may follow: a stream token's rights, a key's limits, how far
back ``since`` may reach, and the abuse rules (refusals in a row, unknown tokens)."""

from __future__ import annotations

import pytest

from hypemeter.auth.model import KeyLimits
from hypemeter.errors import Forbidden, InvalidInput
from hypemeter.live.model import (
    LiveFilter,
    Strikes,
    TokenRights,
    UnknownTokens,
    check_limits,
    parse_since,
    tail_metrics,
)
from hypemeter.metrics.model import DAY_US

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
INF = LiveFilter(influencer_id="inf-1")


def refusal(call: object, *args: object, **kwargs: object) -> tuple[str, str | None]:
    with pytest.raises(Forbidden) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value.message, caught.value.field


# -- a token's rights -------------------------------------------------------------------


def test_a_token_without_the_tail_right_cannot_tail_even_its_own_filter() -> None:
    rights = TokenRights(INF, ("likes",))
    message, field = refusal(rights.check, INF, None, tail=True)
    assert field == "op"
    assert '"tail": true' in message
    rights.check(INF, ("likes",), tail=False)  # subscribing stays allowed


def test_a_tail_right_is_bound_by_the_token_filter() -> None:
    rights = TokenRights(INF, ("likes",), tail=True)
    rights.check(INF, None, tail=True)
    rights.check(LiveFilter(influencer_id="inf-1", content_id="p"), None, tail=True)
    assert refusal(rights.check, LiveFilter(influencer_id="inf-2"), None, tail=True)[1] == (
        "filter"
    )
    assert refusal(rights.check, LiveFilter(content_id="p"), None, tail=True)[1] == "filter"


def test_a_token_names_only_its_metrics() -> None:
    rights = TokenRights(INF, ("likes", "comments"))
    rights.check(INF, ("comments",), tail=False)
    message, field = refusal(rights.check, INF, ("likes", "shares"), tail=False)
    assert field == "metrics"
    assert "likes, comments" in message


# -- a key's limits ---------------------------------------------------------------------


def test_a_key_limited_to_influencers_follows_only_them() -> None:
    limits = KeyLimits(influencers=frozenset({"inf-1", "inf-2"}))
    check_limits(limits, INF, ("likes",))
    check_limits(limits, LiveFilter(influencer_id="inf-2", platform="tiktok"), None)
    for wider in (LiveFilter(), LiveFilter(influencer_id="inf-3"), LiveFilter(content_id="p")):
        message, field = refusal(check_limits, limits, wider, None)
        assert field == "filter.influencer_id"
        assert "inf-1, inf-2" in message


def test_a_key_limited_to_campaigns_needs_one_of_them_in_the_filter() -> None:
    limits = KeyLimits(campaigns=frozenset({"summer"}))
    check_limits(limits, LiveFilter(campaign_id="summer"), None)
    check_limits(limits, LiveFilter(influencer_id="inf-1", campaign_id="summer"), None)
    assert refusal(check_limits, limits, INF, None)[1] == "filter.campaign_id"
    assert refusal(check_limits, limits, INF, None, field="body")[1] == "body.campaign_id"


def test_a_key_limited_to_metrics_names_only_them() -> None:
    limits = KeyLimits(metrics=frozenset({"likes"}))
    check_limits(limits, LiveFilter(), ("likes",))
    assert refusal(check_limits, limits, LiveFilter(), ("likes", "comments"))[1] == "metrics"


def test_an_unlimited_key_follows_anything() -> None:
    check_limits(KeyLimits(), LiveFilter(), ("likes", "comments", "engagement_rate"))


def test_a_long_list_of_allowed_values_is_cut_short_in_messages() -> None:
    limits = KeyLimits(influencers=frozenset(f"inf-{n:02d}" for n in range(25)))
    message, _ = refusal(check_limits, limits, LiveFilter(), None)
    assert "inf-09 and 15 more" in message
    assert "inf-10" not in message


def test_tail_metrics_are_those_of_the_token_and_of_the_key() -> None:
    rights = TokenRights(INF, ("likes", "comments"), tail=True)
    assert tail_metrics(None, KeyLimits()) is None
    assert tail_metrics(rights, KeyLimits()) == {"likes", "comments"}
    assert tail_metrics(None, KeyLimits(metrics=frozenset({"likes"}))) == {"likes"}
    limited = KeyLimits(metrics=frozenset({"comments", "shares"}))
    assert tail_metrics(rights, limited) == {"comments"}


# -- since ----------------------------------------------------------------------------------


def test_since_reaches_back_at_most_the_retention() -> None:
    oldest = NOW_US - 30 * DAY_US
    assert parse_since("2026-10-21T14:00:00Z", NOW_US, retention_days=30) == oldest
    with pytest.raises(InvalidInput) as caught:
        parse_since("2026-10-21T13:59:59Z", NOW_US, retention_days=30)
    assert caught.value.field == "since"
    assert "30 days" in caught.value.message
    assert "retention_days" in caught.value.message
    # Without a retention, any past instant is taken (the query API bounds it itself).
    assert parse_since("2000-01-01T00:00:00Z", NOW_US) < oldest


# -- abuse rules ----------------------------------------------------------------------------


def test_strikes_close_only_after_the_limit_of_refusals_in_a_row() -> None:
    strikes = Strikes(3)
    assert [strikes.refused(), strikes.refused()] == [False, False]
    strikes.allowed()  # an allowed message starts the count again
    assert [strikes.refused(), strikes.refused(), strikes.refused()] == [False, False, True]


def test_unknown_tokens_are_remembered_for_their_ttl() -> None:
    unknown = UnknownTokens(ttl_s=60.0, max_entries=10)
    assert not unknown.holds("h1", 0.0)
    unknown.add("h1", 100.0)
    assert unknown.holds("h1", 100.0)
    assert unknown.holds("h1", 159.9)
    assert not unknown.holds("h1", 160.0)  # expired, and forgotten
    assert len(unknown) == 0


def test_unknown_tokens_are_bounded_oldest_out_first() -> None:
    unknown = UnknownTokens(ttl_s=60.0, max_entries=3)
    for n in range(5):
        unknown.add(f"h{n}", float(n))
    assert len(unknown) == 3
    assert [unknown.holds(f"h{n}", 5.0) for n in range(5)] == [False, False, True, True, True]
    unknown.add("h2", 6.0)  # seen again: the newest now
    unknown.add("h5", 6.0)
    assert [unknown.holds(f"h{n}", 6.0) for n in (2, 3, 4, 5)] == [True, False, True, True]
