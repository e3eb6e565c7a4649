"""The pure rules of retention and erasure: cutoffs, and which deliveries name whom."""

from __future__ import annotations

import json

import pytest

from hypemeter.metrics.model import DAY_US, HOUR_US
from hypemeter.privacy.model import RetentionPolicy, mentions

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
MIDNIGHT = NOW_US - NOW_US % DAY_US


def test_events_are_purged_whole_utc_days_before_the_retention_start() -> None:
    policy = RetentionPolicy(retention_days=30, dead_letter_days=30)
    cutoff = policy.events_cutoff(NOW_US)
    assert cutoff == MIDNIGHT - 30 * DAY_US  # the midnight before now - 30 days
    assert cutoff % DAY_US == 0
    assert cutoff <= NOW_US - 30 * DAY_US < cutoff + DAY_US
    # At midnight itself, the day that starts then is kept whole.
    assert policy.events_cutoff(MIDNIGHT) == MIDNIGHT - 30 * DAY_US
    assert policy.events_cutoff(MIDNIGHT - 1) == MIDNIGHT - 31 * DAY_US


@pytest.mark.parametrize(("retention", "ttl", "kept_days"), [(400, 30, 30), (7, 30, 7), (1, 1, 1)])
def test_dead_letters_go_after_their_ttl_or_the_retention_if_shorter(
    retention: int, ttl: int, kept_days: int
) -> None:
    policy = RetentionPolicy(retention_days=retention, dead_letter_days=ttl)
    assert policy.letters_cutoff(NOW_US + HOUR_US) == NOW_US + HOUR_US - kept_days * DAY_US


def body(document: object) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("delivery", "named"),
    [
        (body({"entry": [{"id": "17841", "changes": []}]}), True),
        (body({"entry": [{"id": 17841}]}), True),  # a number as the platform sent it
        (body({"by_id": {"17841": {"n": 1}}}), True),  # an object key
        (body({"entry": [{"id": "178412"}]}), False),
        (body({"text": "17841 and zed"}), False),  # inside a longer value
        (body(["zed"]), True),
        (b"<feed><yt:channelId>UCzed</yt:channelId></feed>", True),
        (b"https://www.youtube.com/xml/feeds/videos.xml?channel_id=UCzed&x=1", True),
        (b"<feed><yt:channelId>UCzed-2</yt:channelId></feed>", False),
        (b"<feed><yt:channelId>xUCzed</yt:channelId></feed>", False),
        (b"\xff\xfe not json, not utf-8 UCzed", True),
        (b"", False),
    ],
)
def test_a_delivery_names_an_influencer_by_a_whole_id(delivery: bytes, named: bool) -> None:
    assert mentions(delivery, ("zed", "17841", "UCzed")) is named


def test_no_identifier_names_nothing() -> None:
    assert not mentions(body({"id": ""}), ("",))
    assert not mentions(body({"id": "zed"}), ())
