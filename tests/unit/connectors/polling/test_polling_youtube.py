"""YouTube: videos.list statistics 50 at a time, channels.list subscriber counts."""

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
VIDEOS = (FIXTURES / "youtube_videos_list_statistics_response.json").read_bytes()
YOUTUBE = POLLERS["youtube"]
CREDENTIAL = {"api_key": "AIzaKey"}
VIDEO = "dQw4w9WgXcQ"
KEY = {"X-Goog-Api-Key": "AIzaKey"}  # the key travels in a header, never in the URL


def video_call(*ids: str) -> Call:
    return Call(
        "GET",
        "/youtube/v3/videos",
        params=(("part", "statistics"), ("id", ",".join(ids))),
        headers=KEY,
        content_ids=ids,
    )


def channel_call(*ids: str) -> Call:
    return Call(
        "GET",
        "/youtube/v3/channels",
        params=(("part", "statistics"), ("id", ",".join(ids))),
        headers=KEY,
        account_ids=ids,
    )


def body(items: list[dict[str, object]]) -> bytes:
    return json.dumps({"kind": "youtube#videoListResponse", "items": items}).encode()


def test_videos_then_the_distinct_channels_of_the_targets() -> None:
    targets = [
        Target(VIDEO, account_id="UCa"),
        Target("v2", account_id="UCb"),
        Target("v3", account_id="UCa"),
        Target("v4"),
        Target(VIDEO, account_id="UCa"),
    ]
    assert YOUTUBE.calls(targets, CREDENTIAL) == [
        video_call(VIDEO, "v2", "v3", "v4"),
        channel_call("UCa", "UCb"),
    ]
    assert YOUTUBE.calls([], CREDENTIAL) == []


def test_at_most_50_ids_a_call_and_each_list_costs_one_unit() -> None:
    targets = [Target(f"v{i}", account_id=f"UC{i}") for i in range(120)]
    calls = YOUTUBE.calls(targets, CREDENTIAL)
    assert [len(c.content_ids) for c in calls] == [50, 50, 20, 0, 0, 0]
    assert [len(c.account_ids) for c in calls] == [0, 0, 0, 50, 50, 20]
    assert calls[1] == video_call(*(f"v{i}" for i in range(50, 100)))
    assert {c.cost for c in calls} == {1}
    assert YOUTUBE.batch == 50
    assert YOUTUBE.limits.daily_units == 10_000


def test_a_credential_without_an_api_key_is_refused() -> None:
    with pytest.raises(PollError, match="api_key"):
        YOUTUBE.calls([Target(VIDEO)], {"access_token": "x"})


def test_the_fixture_reads_views_likes_and_comments_as_numbers() -> None:
    assert YOUTUBE.read(video_call(VIDEO), 200, VIDEOS) == Answer(
        readings=(
            Reading(VIDEO, None, "views", 1534467.0),
            Reading(VIDEO, None, "likes", 40311.0),
            Reading(VIDEO, None, "comments", 2210.0),
        )
    )


def test_hidden_likes_and_disabled_comments_are_no_reading() -> None:
    items = [{"id": "v2", "statistics": {"viewCount": "10", "favoriteCount": "0"}}, {"id": "v3"}]
    assert YOUTUBE.read(video_call("v2", "v3"), 200, body(items)) == Answer(
        readings=(Reading("v2", None, "views", 10.0),)
    )


def test_a_video_not_in_the_answer_is_a_problem() -> None:
    answer = YOUTUBE.read(video_call(VIDEO, "gone1", "gone2"), 200, VIDEOS)
    assert len(answer.readings) == 3
    assert answer.problems == (
        Problem("video gone1 not in the answer (deleted or private?)"),
        Problem("video gone2 not in the answer (deleted or private?)"),
    )
    assert YOUTUBE.read(video_call("x"), 200, b"{}").problems == (
        Problem("video x not in the answer (deleted or private?)"),
    )


def test_a_count_that_is_not_digits_is_a_problem() -> None:
    items = [{"id": "v2", "statistics": {"viewCount": "1e3", "likeCount": "7"}}]
    answer = YOUTUBE.read(video_call("v2"), 200, body(items))
    assert answer == Answer(
        readings=(Reading("v2", None, "likes", 7.0),),
        problems=(Problem("v2: views is not a count", "'1e3'"),),
    )


def test_channels_give_followers_unless_hidden() -> None:
    items = [
        {
            "id": "UCa",
            "statistics": {
                "viewCount": "9",
                "subscriberCount": "1230000",
                "hiddenSubscriberCount": False,
                "videoCount": "42",
            },
        },
        {
            "id": "UCb",
            "statistics": {"viewCount": "9", "hiddenSubscriberCount": True, "subscriberCount": "0"},
        },
    ]
    answer = YOUTUBE.read(channel_call("UCa", "UCb", "UCc"), 200, body(items))
    assert answer == Answer(
        readings=(Reading(None, "UCa", "followers", 1230000.0),),
        problems=(Problem("channel UCc not in the answer (deleted or terminated?)"),),
    )


def test_items_not_asked_for_are_not_read() -> None:
    assert YOUTUBE.read(video_call("v9"), 200, VIDEOS).readings == ()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"items": {}}',
        b'{"items": [{"statistics": {}}]}',
        b'{"items": [{"id": "v", "statistics": {"viewCount": true}}]}',
    ],
)
def test_a_body_not_in_the_format_is_a_poll_error(raw: bytes) -> None:
    with pytest.raises(PollError, match="youtube: the answer is not in the documented format"):
        YOUTUBE.read(video_call("v"), 200, raw)


def test_a_call_to_another_path_cannot_be_read() -> None:
    with pytest.raises(PollError, match="no reader"):
        YOUTUBE.read(Call("GET", "/youtube/v3/search"), 200, VIDEOS)
