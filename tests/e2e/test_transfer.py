"""``hypemeter export`` and ``import``: a tenant's raw events move between stores intact."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from . import cluster
from .support import ServerFactory, cli, event, recent_ts, run_coroutine, stored_rows

POSTGRES = cluster.POSTGRES or "postgresql://postgres@127.0.0.1:5432/test"


def sent_events() -> list[dict[str, Any]]:
    return [
        event(metric="likes", value=2),
        event(metric="comments", user_id="u-1", text="love it", tags=["promo", "fun"]),
        event(metric="clicks", properties={"utm": {"source": "story"}, "n": 3}, variant="B"),
        event(metric="followers", kind="snapshot", value=1000, ts=recent_ts(30)),
        event(metric="followers", kind="snapshot", value=1040, ts=recent_ts(10)),
        {k: v for k, v in event(metric="shares").items() if k != "event_id"},  # named by us
    ]


def totals(srv: Any) -> dict[str, Any]:
    with srv.client(srv.keys["acme"].read) as client:
        reply = client.get(
            "/v1/influencers/inf-1/metrics",
            params={
                "period": "24h",
                "granularity": "hour",
                "metrics": "likes,comments,clicks,shares,followers,follower_growth",
            },
        )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return {"totals": body["totals"], "series": body["series"]}


def export(data: Path, out: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    done = cli("export", "--tenant", "acme", "--data", str(data), "--out", str(out), env=env)
    assert "exported" in done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_export_then_import_moves_a_tenant_intact_and_twice_stores_once(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    first = make_server()
    sent = sent_events()
    reply = first.post_events(first.keys["acme"].ingest, [*sent, sent[0]])  # and one duplicate
    assert reply.json() == {"accepted": 6, "duplicates": 1, "rejected": []}
    before = totals(first)
    first.stop()

    exported = export(first.data, tmp_path / "acme.ndjson")
    assert len(exported) == 6
    by_metric = {e["metric"]: e for e in exported if e["metric"] != "followers"}
    assert by_metric["comments"]["text"] == "love it"
    assert by_metric["comments"]["tags"] == ["promo", "fun"]
    assert by_metric["comments"]["user_id"] == "u-1"
    assert by_metric["clicks"]["properties"] == {"utm": {"source": "story"}, "n": 3}
    assert by_metric["clicks"]["variant"] == "B"
    assert by_metric["shares"]["event_id"]  # the id the server gave it
    assert {e["event_id"] for e in sent if "event_id" in e} < {e["event_id"] for e in exported}
    # Snapshots travel as the readings sent, in the order they were stored.
    readings = [e for e in exported if e["metric"] == "followers"]
    assert [(r["kind"], r["value"]) for r in readings] == [("snapshot", 1000), ("snapshot", 1040)]

    target = tmp_path / "target"
    done = cli("import", str(tmp_path / "acme.ndjson"), "--tenant", "acme", "--data", str(target))
    assert done.stdout.strip() == (
        "imported 6 lines into acme: 6 accepted, 0 duplicates, 0 rejected"
    )
    again = cli("import", str(tmp_path / "acme.ndjson"), "--tenant", "acme", "--data", str(target))
    assert again.stdout.strip() == (
        "imported 6 lines into acme: 0 accepted, 6 duplicates, 0 rejected"
    )
    assert export(target, tmp_path / "back.ndjson") == exported
    assert stored_rows(target, "SELECT count(*) FROM events WHERE tenant_id = 'acme'") == [(6,)]

    second = make_server(data=target)
    assert totals(second) == before


def test_an_embedded_tenant_moves_into_postgresql(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    source = make_server()
    assert source.post_events(source.keys["acme"].ingest, sent_events()).status_code == 200
    source.stop()
    export(source.data, tmp_path / "acme.ndjson")

    schema = f"hm_transfer_{uuid.uuid4().hex[:10]}"
    into_postgres = {"HYPEMETER_STORE": f"{POSTGRES}?schema={schema}", "HYPEMETER_PROFILE": ""}
    into_postgres = {k: v for k, v in into_postgres.items() if v}
    try:
        done = cli(
            "import", str(tmp_path / "acme.ndjson"), "--tenant", "acme",
            "--data", str(tmp_path / "unused"), env=into_postgres,
        )  # fmt: skip
        assert done.stdout.strip().endswith("6 accepted, 0 duplicates, 0 rejected")
        back = export(tmp_path / "unused", tmp_path / "back.ndjson", env=into_postgres)
        sent = (tmp_path / "acme.ndjson").read_text().splitlines()
        assert back == [json.loads(line) for line in sent]
    finally:
        run_coroutine(_drop(schema))


async def _drop(schema: str) -> None:
    con = await asyncpg.connect(POSTGRES)
    try:
        await con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await con.close()


def test_rejected_lines_are_named_and_the_rest_imported(tmp_path: Path) -> None:
    lines = [
        json.dumps(event()),
        json.dumps(event(platform="myspace")),
        "{not json",
        json.dumps(event(metric="shares")),
    ]
    (tmp_path / "in.ndjson").write_text("\n".join(lines) + "\n")
    done = cli(
        "import", str(tmp_path / "in.ndjson"), "--tenant", "acme",
        "--data", str(tmp_path / "data"), check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.strip() == "imported 4 lines into acme: 2 accepted, 0 duplicates, 2 rejected"
    problems = [line for line in done.stderr.splitlines() if line.startswith("line ")]
    assert problems[0].startswith("line 2: platform: unknown platform 'myspace'")
    assert problems[1].startswith("line 3: ")
    assert len(problems) == 2
