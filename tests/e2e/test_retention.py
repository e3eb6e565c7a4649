"""Retention and erasure over real HTTP: what is past the retention goes, and so does
everything of an erased influencer, down to the bytes of the data directory's files.

Events older than a retention cannot be ingested, so a server with the default
retention (400 days) takes them, and a restart with a retention of 30 days purges
them: its first pass runs at start-up, and ``GET /v1/admin/retention`` tells when it
is done. What the purge leaves is read from the store itself (``stored_rows``).
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import cluster
from .support import LiveServer, ServerFactory, event, rfc3339, stored_rows, utc_now
from .webhooks_support import Webhooks, encode, meta_signed, now_s, unique

DAY_US = 86_400_000_000
ROLLUPS = (
    "rollup_minute",
    "rollup_hour",
    "rollup_day",
    "rollup_tenant_hour",
    "rollup_content_hour",
    "rollup_engagement_hour",
    "rollup_engagement_tags_hour",
)
WAIT_SECONDS = 60.0


def days_ago(now: dt.datetime, days: float) -> str:
    return rfc3339(now - dt.timedelta(days=days))


def epoch_us(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def midnight(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def folded(srv: LiveServer) -> None:
    """Wait until the embedded store folded every event into its rollups (the cluster's
    rollups change with their events)."""
    rollups = srv.app.state.services.rollups
    if hasattr(rollups, "wait_folded"):
        assert rollups.wait_folded(WAIT_SECONDS)


def last_purge(srv: LiveServer, key: str) -> dict[str, Any]:
    """This tenant's view of the last purge, once the API processes made their first pass
    (on the cluster, queries alternate between two: both must answer it)."""
    deadline = time.monotonic() + WAIT_SECONDS
    done = 0
    with srv.client(key) as client:
        while True:
            response = client.get("/v1/admin/retention")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            done = done + 1 if body["last_purge"] is not None else 0
            if done >= 2:
                return body
            assert time.monotonic() < deadline, "no purge pass finished"
            time.sleep(0.05)


def answers(srv: LiveServer, key: str, span: dict[str, str]) -> list[Any]:
    """What the recent range answers: series, a breakdown and a gauge's readings."""
    requests = [
        ("/v1/influencers/inf-1/metrics", {"metrics": "likes,comments", "granularity": "day"}),
        ("/v1/influencers/inf-2/metrics", {"metrics": "followers", "granularity": "day"}),
        ("/v1/metrics/aggregate", {"metric": "likes", "group_by": "day"}),
        ("/v1/metrics/series", {"metrics": "likes,comments", "granularity": "hour"}),
    ]
    found = []
    with srv.client(key) as client:
        for path, params in requests:
            response = client.get(path, params={**params, **span})
            assert response.status_code == 200, response.text
            body = response.json()
            del body["statistics"]  # how the answer was found (timings, rows read)
            found.append(body)
    return found


def count(data: Path, sql: str) -> int:
    return int(stored_rows(data, sql)[0][0])


def test_a_purge_deletes_what_is_past_the_retention_and_no_recent_answer_changes(
    make_server: ServerFactory,
) -> None:
    first = make_server()
    now = utc_now()
    cutoff = epoch_us(midnight(now - dt.timedelta(days=30)))
    reading = {"metric": "followers", "kind": "snapshot", "content_id": None}
    expired = [
        *(event(influencer_id="inf-1", value=1, ts=days_ago(now, 100)) for _ in range(3)),
        event(
            influencer_id="inf-1",
            metric="comments",
            text="old words",
            user_id="u-1",
            ts=days_ago(now, 45),
        ),
        event(influencer_id="inf-2", value=500, ts=days_ago(now, 100), **reading),
    ]
    # The newest reading of inf-2's followers before the cutoff: the value at the start
    # of every range inside the retention, so it stays.
    kept = event(influencer_id="inf-2", value=800, ts=days_ago(now, 60), **reading)
    recent = [
        event(influencer_id="inf-1", value=2, ts=days_ago(now, 10)),
        event(influencer_id="inf-1", metric="comments", text="new words", ts=days_ago(now, 2)),
        event(influencer_id="inf-1", value=4, ts=days_ago(now, 0.01)),
        event(influencer_id="inf-2", value=900, ts=days_ago(now, 5), **reading),
    ]
    acme = first.keys["acme"]
    with first.client(acme.ingest) as client:
        response = client.post("/v1/events", json=[*expired, kept, *recent])
        assert response.json()["accepted"] == 10, response.text
    with first.client(first.keys["globex"].ingest) as client:
        response = client.post("/v1/events", json=[event(ts=days_ago(now, 100))])
        assert response.json()["accepted"] == 1, response.text
    folded(first)
    span = {"start": rfc3339(midnight(now) - dt.timedelta(days=20)), "end": rfc3339(now)}
    before = answers(first, acme.read, span)
    first.stop()
    old = f"epoch_us(ts) < {cutoff}"
    assert count(first.data, f"SELECT count(*) FROM events WHERE {old}") == 7
    for table in ROLLUPS[:3]:
        assert count(first.data, f"SELECT count(*) FROM {table} WHERE bucket < {cutoff}") > 0

    second = make_server(
        data=first.data, keys=first.keys, retention_days=30, purge_start_delay_seconds=0
    )
    status = last_purge(second, acme.admin)
    assert status["retention_days"] == 30
    assert status["dead_letter_days"] == 30
    assert status["events_before"] == rfc3339(midnight(now - dt.timedelta(days=30))).replace(
        ".000000", ""
    )
    if not cluster.POSTGRES:  # there, the other API process may have purged them
        assert status["last_purge"]["events"] == len(expired)
    assert answers(second, acme.read, span) == before
    second.stop()

    data = second.data
    rows = stored_rows(data, f"SELECT influencer_id, metric, value FROM events WHERE {old}")
    assert rows == [("inf-2", "followers", 800.0)]
    assert count(data, f"SELECT count(*) FROM events WHERE NOT ({old})") == len(recent)
    for table in ROLLUPS:
        metrics = stored_rows(
            data,
            f"SELECT DISTINCT tenant_id, {'metric' if table in ROLLUPS[:5] else 'platform'} "
            f"FROM {table} WHERE bucket < {cutoff}",
        )
        # Only the kept reading's rows are older than the cutoff.
        expected = [("acme", "followers")] if table in ROLLUPS[:4] else []
        assert metrics == expected, table


def meta_delivery(account: str, marker: str) -> bytes:
    """A delivery with a comment (counted) and a field no mapping knows (a dead letter),
    both carrying ``marker``."""
    media = unique("m")
    comment = {
        "id": unique("c"),
        "text": f"so good {marker}",
        "from": {"id": unique("u"), "username": "fan"},
        "media": {"id": media, "media_product_type": "FEED"},
    }
    changes = [
        {"field": "comments", "value": comment},
        {"field": "reel_remixes", "value": {"media_id": media, "note": marker}},
    ]
    entry = {"id": account, "time": now_s(), "changes": changes}
    return encode({"object": "instagram", "entry": [entry]})


def forms(marker: str) -> list[bytes]:
    """The marker's bytes as stored: plain, and base64 at each alignment (how a dead
    letter keeps its raw body)."""
    raw = marker.encode()
    found = [raw]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        # The characters that only the marker's own bits decide.
        found.append(encoded[-(-offset * 8 // 6) : len(raw) * 8 // 6 + offset * 8 // 6])
    return found


def holding(data: Path, marker: str) -> list[str]:
    """The files under ``data`` (every one: database, WAL, journal...) holding the marker."""
    needles = forms(marker)
    found = []
    for path in sorted(data.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            if any(needle in content for needle in needles):
                found.append(str(path.relative_to(data)))
    return found


def write_marked(srv: LiveServer, influencer: str, marker: str) -> None:
    """A registered influencer, a counted comment and a dead letter carrying ``marker``,
    and an SDK event whose text carries it."""
    with Webhooks(srv) as acme:
        account = unique("1784")
        acme.influencer("instagram", account, influencer)
        connector = acme.connector("instagram")
        body = meta_delivery(account, marker)
        answer = acme.deliver(connector, body, meta_signed(connector.secret(), body))
        assert answer.status_code == 200, answer.text
        (letter,) = acme.dead_letters(connector)
        assert marker in letter["body"]
    sdk = event(influencer_id=influencer, metric="comments", text=f"{marker} says hi")
    with srv.client(srv.keys["acme"].ingest) as client:
        assert client.post("/v1/events", json=[sdk]).json()["accepted"] == 1


def erase(srv: LiveServer, influencer: str) -> None:
    with srv.client(srv.keys["acme"].admin) as client:
        response = client.delete(f"/v1/influencers/{influencer}", params={"erase": "true"})
    assert response.status_code == 200, response.text
    assert response.json()["erased_events"] == 2


@pytest.mark.skipif(bool(cluster.POSTGRES), reason="the embedded store's files")
def test_an_erased_influencer_leaves_no_byte_in_the_data_directory(
    make_server: ServerFactory,
) -> None:
    srv = make_server()
    marker = f"MRK{uuid.uuid4().hex[:18].upper()}"
    write_marked(srv, "zed", marker)
    with srv.client(srv.keys["acme"].ingest) as client:
        assert client.post("/v1/events", json=[event(influencer_id="ana")]).status_code == 200
    assert holding(srv.data, marker), "the control: the marker is stored somewhere"

    erase(srv, "zed")
    with srv.client(srv.keys["acme"].admin) as client:
        assert client.get("/v1/admin/dead-letters").json()["data"] == []  # it named zed
    # While the server runs: the WAL and the journal kept it, and no longer do.
    assert holding(srv.data, marker) == []
    srv.stop()
    assert holding(srv.data, marker) == []

    # Written into the database file (a stop checkpoints), then erased: the file keeps
    # deleted rows until it is rewritten, which the next start does.
    srv = make_server(data=srv.data, keys=srv.keys)
    other = f"MRK{uuid.uuid4().hex[:18].upper()}"
    write_marked(srv, "kim", other)
    srv.stop()
    assert "hypemeter.duckdb" in holding(srv.data, other), "the control: in the file"
    srv = make_server(data=srv.data, keys=srv.keys)
    erase(srv, "kim")
    srv.stop()
    srv = make_server(data=srv.data, keys=srv.keys)
    assert holding(srv.data, other) == []
    with srv.client(srv.keys["acme"].read) as client:
        kept = client.get(
            "/v1/influencers/ana/metrics", params={"period": "2h", "metrics": "likes"}
        )
    assert kept.status_code == 200, kept.text
    assert kept.json()["totals"] == {"likes": 1}
    srv.stop()
    assert stored_rows(srv.data, "SELECT count(*) FROM events WHERE tenant_id = 'acme'") == [(1,)]


def test_dead_letters_are_deleted_one_by_one_or_by_connector_and_state(
    make_server: ServerFactory,
) -> None:
    srv = make_server()
    with Webhooks(srv) as acme, Webhooks(srv, "globex") as globex:
        first, second = acme.connector("instagram"), acme.connector("instagram")
        for connector in (first, first, first, second):
            body = meta_delivery(unique("1784"), "x")  # no influencer has the account
            answer = acme.deliver(connector, body, meta_signed(connector.secret(), body))
            assert answer.status_code == 200, answer.text
        letters = acme.dead_letters(first)
        assert len(letters) == 3
        assert len(acme.dead_letters(second)) == 1

        one = letters[0]["id"]
        assert globex.admin.delete(f"/v1/admin/dead-letters/{one}").status_code == 404
        with srv.client(srv.keys["acme"].read) as reader:
            assert reader.delete(f"/v1/admin/dead-letters/{one}").status_code == 403
        answer = acme.admin.delete(f"/v1/admin/dead-letters/{one}")
        assert (answer.status_code, answer.json()) == (200, {"id": one, "deleted": True})
        again = acme.admin.delete(f"/v1/admin/dead-letters/{one}")
        assert again.status_code == 404
        assert again.json()["error"]["field"] == "id"
        assert [d["id"] for d in acme.dead_letters(first)] == [d["id"] for d in letters[1:]]

        resolved = acme.admin.delete(
            "/v1/admin/dead-letters", params={"connector_id": first.id, "state": "resolved"}
        )
        assert resolved.json() == {"deleted": 0}
        bad = acme.admin.delete("/v1/admin/dead-letters", params={"state": "gone"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["error"]["field"] == "state"
        opened = acme.admin.delete(
            "/v1/admin/dead-letters", params={"connector_id": first.id, "state": "open"}
        )
        assert (opened.status_code, opened.json()) == (200, {"deleted": 2})
        assert acme.dead_letters(first) == []
        assert len(acme.dead_letters(second)) == 1
        assert acme.admin.delete("/v1/admin/dead-letters").json() == {"deleted": 1}
        assert acme.dead_letters(second) == []


def test_retention_is_for_admins(make_server: ServerFactory) -> None:
    srv = make_server()
    with httpx.Client(base_url=srv.url, timeout=30) as anonymous:
        assert anonymous.get("/v1/admin/retention").status_code == 401
    with srv.client(srv.keys["acme"].read) as client:
        assert client.get("/v1/admin/retention").status_code == 403
