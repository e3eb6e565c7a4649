"""X: GET /2/tweets for up to 100 ids with public_metrics; partial errors name the post."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypemeter.connectors.polling import (
    POLLERS,
    Answer,
    Call,
    PollError,
    Problem,
    Reading,
    Target,
)

FIXTURES = Path(__file__).parent / "fixtures"
LOOKUP = (FIXTURES / "x_tweets_lookup_public_metrics_response.json").read_bytes()
X = POLLERS["x"]
CREDENTIAL = {"bearer_token": "AAAAbearer"}
POST = "1460323737035677698"
GONE = "1276230436478386177"


def lookup_call(*ids: str) -> Call:
    return Call(
        "GET",
        "/2/tweets",
        params=(("ids", ",".join(ids)), ("tweet.fields", "public_metrics")),
        headers={"Authorization": "Bearer AAAAbearer"},
        content_ids=ids,
    )


def test_one_lookup_per_100_posts() -> None:
    ids = [str(1_460_000_000_000_000_000 + i) for i in range(101)]
    calls = X.calls([Target(i) for i in ids], CREDENTIAL)
    assert calls == [lookup_call(*ids[:100]), lookup_call(ids[100])]
    assert X.batch == 100
    assert (X.limits.window_s, X.limits.window_calls) == (900, 300)


def test_a_credential_without_a_bearer_token_is_refused() -> None:
    with pytest.raises(PollError, match="bearer_token"):
        X.calls([Target(POST)], {"access_token": "x"})


def test_the_fixture_reads_every_public_metric() -> None:
    assert X.read(lookup_call(POST), 200, LOOKUP) == Answer(
        readings=(
            Reading(POST, None, "likes", 211.0),
            Reading(POST, None, "comments", 9.0),
            Reading(POST, None, "saves", 7.0),
            Reading(POST, None, "impressions", 18342.0),
            Reading(POST, None, "shares", 17.0),  # 14 retweets + 3 quotes
        )
    )


def test_partial_errors_and_silent_absences_name_the_posts() -> None:
    raw = json.loads(LOOKUP)
    raw["errors"] = [
        {
            "value": GONE,
            "detail": f"Could not find tweet with ids: [{GONE}].",
            "title": "Not Found Error",
            "resource_type": "tweet",
            "parameter": "ids",
            "resource_id": GONE,
            "type": "https://api.twitter.com/2/problems/resource-not-found",
        },
        {
            "value": 42,
            "title": "Authorization Error",
            "detail": "Sorry, you are not authorized to see the Tweet with ids: [42].",
        },
    ]
    answer = X.read(lookup_call(POST, GONE, "42", "77"), 200, json.dumps(raw).encode())
    assert len(answer.readings) == 5
    assert answer.problems == (
        Problem(
            f"post {GONE}: X reported an error",
            f"Not Found Error: Could not find tweet with ids: [{GONE}].",
        ),
        Problem(
            "post 42: X reported an error",
            "Authorization Error: Sorry, you are not authorized to see the Tweet with ids: [42].",
        ),
        Problem("post 77 not in the answer (deleted or protected?)"),
    )


def test_an_answer_with_only_errors_has_no_readings() -> None:
    raw = {"errors": [{"title": "Not Found Error", "detail": "Could not find tweet."}]}
    assert X.read(lookup_call(GONE), 200, json.dumps(raw).encode()) == Answer(
        problems=(
            Problem("post ?: X reported an error", "Not Found Error: Could not find tweet."),
            Problem(f"post {GONE} not in the answer (deleted or protected?)"),
        )
    )


def test_shares_need_both_retweets_and_quotes() -> None:
    raw = {
        "data": [{"id": POST, "public_metrics": {"retweet_count": 4, "like_count": 1}}, {"id": "2"}]
    }
    assert X.read(lookup_call(POST, "2"), 200, json.dumps(raw).encode()) == Answer(
        readings=(Reading(POST, None, "likes", 1.0),)
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"data": {"id": "1"}}',
        b'{"data": [{"public_metrics": {}}]}',
        b'{"data": [{"id": "1", "public_metrics": {"like_count": "2"}}]}',
        b'{"errors": [{"title": 5}]}',
    ],
)
def test_a_body_not_in_the_format_is_a_poll_error(raw: bytes) -> None:
    with pytest.raises(PollError, match="x: the answer is not in the documented format"):
        X.read(lookup_call("1"), 200, raw)
