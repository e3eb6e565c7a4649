"""Invariant 1 (ack means durable) and 2 (exactly-once) across ``kill -9``.

Clients stream batches of unique events at ``hypemeter serve``; the server is
SIGKILLed right after some answers while requests are still in flight, then
restarted on the same data directory. Every acknowledged event must be there
exactly once, and every unanswered batch must be stored wholly or not at all.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .support import ServerProcess, bearer, cli, create_key, event, stored_rows

CLIENTS = 3
BATCH = 100
ACKED_BEFORE_KILL = 40
WAIT_LIMIT = 60.0


@dataclass
class Ledger:
    """What the clients know: batches answered 200, and batches without an answer."""

    acked: list[list[dict[str, object]]] = field(default_factory=list)
    unanswered: list[list[dict[str, object]]] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_acked(self) -> int:
        with self.lock:
            return len(self.acked)


def stream(url: str, key: str, client_no: int, ledger: Ledger, stop: threading.Event) -> None:
    seq = 0
    with httpx.Client(base_url=url, headers=bearer(key), timeout=30) as client:
        while not stop.is_set():
            batch = [
                event(event_id=f"dur-{client_no}-{seq}-{i}", content_id=f"c{client_no}")
                for i in range(BATCH)
            ]
            seq += 1
            try:
                response = client.post("/v1/events", json=batch)
            except httpx.TransportError:
                with ledger.lock:
                    ledger.unanswered.append(batch)
                return
            with ledger.lock:
                if response.status_code == 200:
                    assert response.json() == {"accepted": BATCH, "duplicates": 0, "rejected": []}
                    ledger.acked.append(batch)
                else:
                    ledger.refused.append(response.status_code)


def ids(batches: list[list[dict[str, object]]]) -> set[str]:
    return {str(e["event_id"]) for batch in batches for e in batch}


def stored_ids(data: Path) -> list[str]:
    rows = stored_rows(data, "SELECT event_id FROM events WHERE tenant_id = 'acme'")
    return [str(r[0]) for r in rows]


def test_acknowledged_events_survive_sigkill(
    tmp_path: Path, spawn: Callable[[Path], ServerProcess]
) -> None:
    data = tmp_path / "data"
    cli("tenants", "create", "acme", "--data", str(data))
    _, key = create_key(data, "acme", "ingest")
    server = spawn(data)

    ledger = Ledger()
    stop = threading.Event()
    clients = [
        threading.Thread(target=stream, args=(server.url, key, n, ledger, stop), daemon=True)
        for n in range(CLIENTS)
    ]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + WAIT_LIMIT
    while ledger.count_acked() < ACKED_BEFORE_KILL:
        assert time.monotonic() < deadline, "the clients got too few answers"
        assert all(t.is_alive() for t in clients), "a client stopped early"
        time.sleep(0.002)

    assert server.kill() == -signal.SIGKILL
    stop.set()
    for thread in clients:
        thread.join(timeout=60)
        assert not thread.is_alive()

    assert ledger.refused == []
    assert len(ledger.acked) >= ACKED_BEFORE_KILL
    acked_ids = ids(ledger.acked)
    unanswered_ids = ids(ledger.unanswered)
    assert len(acked_ids) == BATCH * len(ledger.acked)
    assert not acked_ids & unanswered_ids

    # Straight after the kill, once the store is opened (which applies what its ingest
    # journal holds beyond the DuckDB file), the file holds every acknowledged event
    # once, plus whole in-flight batches that happened to be journaled.
    cli("migrate", "--data", str(data))
    after_kill = stored_ids(data)
    assert len(after_kill) == len(set(after_kill)), "an event was stored twice"
    assert acked_ids <= set(after_kill)
    extra = set(after_kill) - acked_ids
    committed_in_flight = [b for b in ledger.unanswered if ids([b]) <= extra]
    assert extra == ids(committed_in_flight)
    assert len(after_kill) == len(acked_ids) + BATCH * len(committed_in_flight)

    restarted = spawn(data)
    with httpx.Client(base_url=restarted.url, headers=bearer(key), timeout=60) as client:
        # Every acknowledged event survived the kill and still counts once.
        for batch in ledger.acked:
            again = client.post("/v1/events", json=batch)
            assert again.json() == {"accepted": 0, "duplicates": BATCH, "rejected": []}
        # A batch without an answer is either wholly stored or not at all.
        for batch in ledger.unanswered:
            reply = client.post("/v1/events", json=batch).json()
            assert reply["accepted"] + reply["duplicates"] == BATCH
            assert reply["accepted"] in {0, BATCH}, reply
            assert (reply["duplicates"] == BATCH) == (batch in committed_in_flight)
    restarted.terminate()

    stored = stored_ids(data)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(stored) == acked_ids | unanswered_ids
