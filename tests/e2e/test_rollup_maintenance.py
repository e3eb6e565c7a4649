"""The rollup maintainer: what a stop leaves unfolded is folded at the next start."""

from __future__ import annotations

import time
from typing import Any

import pytest

from . import cluster
from .support import ServerFactory, event

pytestmark = pytest.mark.skipif(
    bool(cluster.POSTGRES),
    reason="the embedded fold maintainer; PostgreSQL folds in-commit",
)


def _wait(condition: Any, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


def test_events_left_unfolded_at_a_stop_are_folded_at_start_without_new_ingest(
    make_server: ServerFactory,
) -> None:
    # After a fold the maintainer rests for a minute: the second batch stays unfolded.
    first = make_server(decode_workers=0, rollup_fold_interval=60)
    keys = first.keys
    rollups = first.app.state.services.rollups
    assert first.post_events(keys["acme"].ingest, [event(value=2)]).json()["accepted"] == 1
    assert _wait(rollups.folded)
    assert first.post_events(keys["acme"].ingest, [event(value=5)]).json()["accepted"] == 1
    assert not rollups.folded()
    watermark, stored = first.rows(
        "SELECT (SELECT value::BIGINT FROM meta WHERE key = 'rollup_seq'), max(seq) FROM events"
    )[0]
    assert watermark < stored  # stopped (promptly, mid-rest) before folding the second batch

    second = make_server(data=first.data, keys=keys, decode_workers=0)
    # Nothing is ingested and nothing nudges a fold: the start alone must fold the backlog.
    assert _wait(second.app.state.services.rollups.folded)
    folded = second.rows(
        "SELECT (SELECT value::BIGINT FROM meta WHERE key = 'rollup_seq'), "
        "(SELECT sum(total) FROM rollup_hour WHERE metric = 'likes'), "
        "(SELECT sum(events) FROM rollup_day WHERE metric = 'likes')"
    )[0]
    assert folded == (stored, 7.0, 2)
