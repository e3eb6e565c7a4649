"""Instagram media insights: one call per media, saved -> saves, empty values are no reading."""

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
INSIGHTS = (FIXTURES / "meta_instagram_media_insights_response.json").read_bytes()
INSTAGRAM = POLLERS["instagram"]
MEDIA = "18023345989012345"
CREDENTIAL = {"access_token": "IGQtoken"}
ASKED = "views,reach,likes,comments,shares,saved,total_interactions"


def call_for(media_id: str = MEDIA) -> Call:
    return INSTAGRAM.calls([Target(media_id)], CREDENTIAL)[0]


def test_each_media_is_one_insights_call_with_the_token_in_a_header() -> None:
    calls = INSTAGRAM.calls([Target(MEDIA), Target("17900000000000001"), Target(MEDIA)], CREDENTIAL)
    bearer = {"Authorization": "Bearer IGQtoken"}
    assert calls == [
        Call(
            "GET",
            f"/{MEDIA}/insights",
            params=(("metric", ASKED),),
            headers=bearer,
            content_ids=(MEDIA,),
        ),
        Call(
            "GET",
            "/17900000000000001/insights",
            params=(("metric", ASKED),),
            headers=bearer,
            content_ids=("17900000000000001",),
        ),
    ]
    assert all("IGQtoken" not in f"{c.path}{c.params}" for c in calls)
    assert INSTAGRAM.batch == 1
    assert INSTAGRAM.calls([], CREDENTIAL) == []


def test_a_media_id_cannot_escape_its_path() -> None:
    assert call_for("../me?x=1").path == "/..%2Fme%3Fx%3D1/insights"


def test_a_credential_without_a_token_is_refused() -> None:
    with pytest.raises(PollError, match="access_token"):
        INSTAGRAM.calls([Target(MEDIA)], {"bearer_token": "x"})


def test_the_fixture_reads_every_counter() -> None:
    answer = INSTAGRAM.read(call_for(), 200, INSIGHTS)
    assert answer == Answer(
        readings=(
            Reading(MEDIA, None, "likes", 1520.0),
            Reading(MEDIA, None, "comments", 87.0),
            Reading(MEDIA, None, "shares", 31.0),
            Reading(MEDIA, None, "saves", 64.0),
            Reading(MEDIA, None, "reach", 20417.0),
            Reading(MEDIA, None, "views", 35112.0),
        )
    )


def test_missing_data_is_no_reading_not_zero() -> None:
    body = {
        "data": [
            {"name": "views", "period": "lifetime", "values": []},
            {"name": "reach", "period": "lifetime", "values": [{"value": 0}]},
            {"name": "total_interactions", "period": "lifetime", "values": [{"value": 9}]},
            {"name": "likes", "period": "lifetime", "values": [{}]},
            {"name": "follows", "period": "lifetime", "values": [{"value": 3}]},
        ]
    }
    answer = INSTAGRAM.read(call_for(), 200, json.dumps(body).encode())
    assert answer == Answer(readings=(Reading(MEDIA, None, "reach", 0.0),))
    assert INSTAGRAM.read(call_for(), 200, b'{"data": []}') == Answer()


def test_the_latest_value_and_total_value_are_read() -> None:
    body = {
        "data": [
            {"name": "views", "values": [{"value": 10}, {"value": 12}]},
            {"name": "shares", "total_value": {"value": 4}},
        ]
    }
    answer = INSTAGRAM.read(call_for(), 200, json.dumps(body).encode())
    assert answer.readings == (
        Reading(MEDIA, None, "views", 12.0),
        Reading(MEDIA, None, "shares", 4.0),
    )


def test_a_value_that_is_no_count_is_a_problem() -> None:
    body = {
        "data": [
            {"name": "likes", "values": [{"value": -1}]},
            {"name": "views", "values": [{"value": {"a": 1}}]},
        ]
    }
    answer = INSTAGRAM.read(call_for(), 200, json.dumps(body).encode())
    assert answer.readings == ()
    assert answer.problems == (
        Problem(f"{MEDIA}: likes is not a count", "-1"),
        Problem(f"{MEDIA}: views is not a count", "{'a': 1}"),
    )


def test_an_error_body_is_a_problem_its_message_kept_apart() -> None:
    body = {
        "error": {
            "message": "(#10) Not enough viewers for the media to show insights",
            "type": "OAuthException",
            "code": 10,
            "fbtrace_id": "A1",
        }
    }
    answer = INSTAGRAM.read(call_for(), 200, json.dumps(body).encode())
    assert answer == Answer(
        problems=(
            Problem(
                f"media {MEDIA}: Instagram error 10",
                "(#10) Not enough viewers for the media to show insights",
            ),
        )
    )


@pytest.mark.parametrize(
    "body", [b"<html>", b"[]", b'{"data": {"name": "views"}}', b'{"data": [{"values": []}]}']
)
def test_a_body_not_in_the_format_is_a_poll_error(body: bytes) -> None:
    with pytest.raises(PollError, match="instagram: the answer is not in the documented format"):
        INSTAGRAM.read(call_for(), 200, body)


def test_a_call_must_name_exactly_one_media() -> None:
    with pytest.raises(PollError, match="exactly one media"):
        INSTAGRAM.read(Call("GET", "/x/insights"), 200, INSIGHTS)
