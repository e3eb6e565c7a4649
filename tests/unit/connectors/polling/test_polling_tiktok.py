"""TikTok: POST /v2/video/query/ with up to 20 video ids, bearer token, error code "ok"."""

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
QUERY = (FIXTURES / "tiktok_video_query_response.json").read_bytes()
TIKTOK = POLLERS["tiktok"]
CREDENTIAL = {"access_token": "act.example"}
VIDEO = "7080213458555737986"
FIELDS = "id,like_count,comment_count,share_count,view_count"
HEADERS = {"Authorization": "Bearer act.example", "Content-Type": "application/json"}


def query_call(*ids: str) -> Call:
    return Call(
        "POST",
        "/v2/video/query/",
        params=(("fields", FIELDS),),
        json={"filters": {"video_ids": list(ids)}},
        headers=HEADERS,
        content_ids=ids,
    )


def test_one_query_per_20_videos() -> None:
    ids = [str(7_000_000_000_000_000_000 + i) for i in range(45)]
    calls = TIKTOK.calls([Target(i) for i in [*ids, ids[0]]], CREDENTIAL)
    assert calls == [query_call(*ids[:20]), query_call(*ids[20:40]), query_call(*ids[40:])]
    assert TIKTOK.batch == 20
    assert TIKTOK.calls([], CREDENTIAL) == []


def test_a_credential_without_a_token_is_refused() -> None:
    with pytest.raises(PollError, match="access_token"):
        TIKTOK.calls([Target(VIDEO)], {})


def test_the_fixture_reads_every_counter() -> None:
    assert TIKTOK.read(query_call(VIDEO), 200, QUERY) == Answer(
        readings=(
            Reading(VIDEO, None, "views", 48210.0),
            Reading(VIDEO, None, "likes", 1504.0),
            Reading(VIDEO, None, "comments", 73.0),
            Reading(VIDEO, None, "shares", 22.0),
        )
    )


def test_a_video_not_returned_is_a_problem() -> None:
    answer = TIKTOK.read(query_call(VIDEO, "7000000000000000001"), 200, QUERY)
    assert len(answer.readings) == 4
    assert answer.problems == (
        Problem(
            "video 7000000000000000001 not in the answer "
            "(deleted, private or not the token owner's?)"
        ),
    )


def test_absent_counters_are_no_reading_and_numeric_ids_are_read() -> None:
    raw = {
        "data": {"videos": [{"id": 7000000000000000001, "view_count": 5}]},
        "error": {"code": "ok", "message": "", "log_id": "L"},
    }
    answer = TIKTOK.read(query_call("7000000000000000001"), 200, json.dumps(raw).encode())
    assert answer == Answer(readings=(Reading("7000000000000000001", None, "views", 5.0),))


def test_an_error_code_other_than_ok_is_a_problem() -> None:
    raw = {
        "data": {},
        "error": {
            "code": "scope_not_authorized",
            "message": "The user did not authorize the scope required",
            "log_id": "202611201430",
        },
    }
    assert TIKTOK.read(query_call(VIDEO), 200, json.dumps(raw).encode()) == Answer(
        problems=(
            Problem(
                "TikTok error scope_not_authorized (log_id 202611201430)",
                "The user did not authorize the scope required",
            ),
        )
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b'{"data": []}',
        b'{"data": {"videos": [{"like_count": 1}]}}',
        b'{"data": {"videos": [{"id": "1", "like_count": "many"}]}}',
        b'{"error": "bad"}',
    ],
)
def test_a_body_not_in_the_format_is_a_poll_error(raw: bytes) -> None:
    with pytest.raises(PollError, match="tiktok: the answer is not in the documented format"):
        TIKTOK.read(query_call(VIDEO), 200, raw)
