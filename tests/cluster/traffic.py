"""Traffic for the cluster tests: events, a ledger of acknowledgements, steady load,
a live WebSocket client, and the exactly-once check.

A client that gets 503 or 429 retries the same batch (same event ids) until it is
acknowledged, as the API asks it to. The ledger keeps every event sent, the ids of
every batch acknowledged with 200, the refusals (503/429 with Retry-After) and
anything else (500s, answers without Retry-After, no answer at all), which must
never happen.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from e2e.support import bearer, new_id
from e2e.test_live import day_range, today

from .deployment import Api, Deployment

METRICS = ("likes", "comments")
RETRY_PAUSE = 0.2  # seconds; shorter than the Retry-After asked, to keep the tests short
ACK_DEADLINE = 90.0  # a batch not acknowledged within this long fails the test


def make_events(
    count: int, *, influencers: list[str], campaign: str, rng: random.Random
) -> list[dict[str, Any]]:
    """Deltas of today with small integer values, so that sums are exact."""
    return [
        {
            "event_id": new_id(),
            "influencer_id": rng.choice(influencers),
            "platform": rng.choice(("instagram", "tiktok", "youtube")),
            "content_id": f"post-{rng.randrange(20)}",
            "campaign_id": campaign,
            "metric": rng.choice(METRICS),
            "value": rng.randint(1, 5),
            "ts": today(rng.uniform(0.5, 0.999)),
        }
        for _ in range(count)
    ]


def sums(events: list[dict[str, Any]], by: str, metric: str) -> dict[str, int]:
    """The brute-force answer: the sum of ``metric`` per value of ``by``."""
    out: Counter[str] = Counter()
    for event in events:
        if event["metric"] == metric:
            out[event[by]] += event["value"]
    return dict(out)


@dataclass
class Ledger:
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    batches: int = 0
    refusals: Counter[int] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> str:
        return (
            f"ledger: {len(self.sent)} events sent, {len(self.acked)} acknowledged in "
            f"{self.batches} batches; refusals {dict(self.refusals)}; bad answers {self.bad[:5]}"
        )


class Sender:
    """Posts batches to one or more APIs (in turn) and records the answers in a ledger."""

    def __init__(self, apis: list[Api], key: str, ledger: Ledger) -> None:
        self._apis = apis
        self._turn = 0
        self._ledger = ledger
        # A connection per request: no keep-alive race with the server's idle timeout
        # can pass for an unanswered request.
        self._client = httpx.Client(
            headers=bearer(key), timeout=30.0, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def close(self) -> None:
        self._client.close()

    def post(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        """Post until acknowledged (200); the answer's body."""
        ledger = self._ledger
        with ledger.lock:
            ledger.sent.update((e["event_id"], e) for e in batch)
        deadline = time.monotonic() + ACK_DEADLINE
        while True:
            api = self._apis[self._turn % len(self._apis)]
            self._turn += 1
            body, problem = self._attempt(api, batch)
            if body is not None:
                with ledger.lock:
                    ledger.acked.update(e["event_id"] for e in batch)
                    ledger.batches += 1
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"a batch was not acknowledged in {ACK_DEADLINE} s: {problem}")
            time.sleep(RETRY_PAUSE)

    def _attempt(self, api: Api, batch: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
        """The body of a 200; else None and what went wrong (refusals are fine, the rest bad)."""
        try:
            response = self._client.post(f"{api.url}/v1/events", json=batch)
        except httpx.TransportError as exc:
            self._bad(f"{api.name}: no answer: {exc!r}")
            return None, repr(exc)
        status = response.status_code
        if status == 200:
            body: dict[str, Any] = response.json()
            if body["rejected"] or body["accepted"] + body["duplicates"] != len(batch):
                self._bad(f"{api.name}: 200 {response.text[:300]}")
            return body, ""
        retry_after = response.headers.get("retry-after", "")
        if status in (429, 503) and retry_after.isdigit():
            with self._ledger.lock:
                self._ledger.refusals[status] += 1
        else:
            self._bad(f"{api.name}: {status} Retry-After={retry_after!r} {response.text[:300]}")
        return None, f"{status} {response.text[:200]}"

    def _bad(self, what: str) -> None:
        with self._ledger.lock:
            self._ledger.bad.append(what)


class SteadyLoad:
    """Batches posted one after another from a thread until ``stop``; the batch in flight
    when ``stop`` is called is still retried until acknowledged."""

    def __init__(
        self,
        sender: Sender,
        make_batch: Callable[[], list[dict[str, Any]]],
        *,
        pause: float = 0.05,
        max_batches: int = 1000,
    ) -> None:
        self._sender = sender
        self._make_batch = make_batch
        self._pause = pause
        self._max = max_batches
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cluster-load", daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.stop()
        else:  # the test failed already: let the thread go rather than mask the failure
            self._stopping.set()
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            for _ in range(self._max):
                if self._stopping.is_set():
                    return
                self._sender.post(self._make_batch())
                self._stopping.wait(self._pause)
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=ACK_DEADLINE + 30)
        assert not self._thread.is_alive(), "the load thread did not finish"
        if self._error is not None:
            raise self._error


class LiveClient:
    """A WebSocket on ``/v1/stream`` (synchronous): the last totals of each subscription
    and the events of each tail received so far."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.totals: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}

    def _recv(self, timeout: float) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self._ws.recv(timeout=timeout))
        if message["type"] in ("snapshot", "update"):
            self.totals[message["id"]] = message["totals"]
        elif message["type"] == "event":
            self.events.setdefault(message["id"], []).extend(message["events"])
        return message

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send, then read up to the first answer of the message's id (skipping others)."""
        answers: list[dict[str, Any]] = []

        def answered(m: dict[str, Any]) -> bool:
            if m.get("id") == message["id"] and m["type"] != "update":
                answers.append(m)
            return bool(answers)

        self._ws.send(json.dumps(message))
        assert self.wait(answered, 10.0), f"no answer to {message}"
        return answers[0]

    def subscribe(self, sub_id: str, live_filter: dict[str, str]) -> dict[str, Any]:
        """Subscribe to today's totals of METRICS; the snapshot's totals."""
        answer = self.ask(subscription(sub_id, live_filter))
        assert answer["type"] == "snapshot", answer
        return self.totals[sub_id]

    def tail(self, sub_id: str, live_filter: dict[str, str]) -> None:
        """Follow the raw events of one influencer or content item."""
        answer = self.ask({"op": "tail", "id": sub_id, "filter": live_filter})
        assert answer["type"] == "tailing", answer
        self.events[sub_id] = []

    def wait(self, done: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        """Read until a message passes ``done``; False after ``timeout``.

        Raises AssertionError if the server closes the connection.
        """
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if done(self._recv(left)):
                    return True
            except TimeoutError:
                return False
            except ConnectionClosed as exc:
                raise AssertionError(f"the server closed the live connection: {exc}") from exc
        return False

    def reaches(self, sub_id: str, want: dict[str, Any], timeout: float) -> bool:
        """Read until the totals of ``sub_id`` equal ``want``; False after ``timeout``."""
        if self.totals.get(sub_id) == want:
            return True
        return self.wait(lambda _: self.totals.get(sub_id) == want, timeout)


def subscription(sub_id: str, live_filter: dict[str, str]) -> dict[str, Any]:
    """The message that subscribes to today's totals of METRICS."""
    return {
        "op": "subscribe",
        "id": sub_id,
        "filter": live_filter,
        "metrics": list(METRICS),
        "granularity": "day",
    }


@contextlib.contextmanager
def live_client(api: Api, key: str) -> Iterator[LiveClient]:
    with connect(
        api.ws_url, additional_headers=bearer(key), open_timeout=10, close_timeout=2
    ) as ws:
        yield LiveClient(ws)


def eventually(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds; False if it still does not after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def query(api: Api, key: str, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{api.url}{path}", params=params, headers=bearer(key), timeout=30.0)
    assert response.status_code == 200, f"{api.name} {path}: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    return body


def aggregate(api: Api, key: str, metric: str, by: str, campaign: str) -> dict[str, Any]:
    """Today's ``metric`` of one campaign grouped ``by`` (every row, one page)."""
    body = query(
        api,
        key,
        "/v1/metrics/aggregate",
        metric=metric,
        group_by=by,
        campaign_id=campaign,
        limit=1000,
        **day_range(),
    )
    assert body["next_cursor"] is None, body
    return {row["key"]: row["value"] for row in body["data"]}


def influencer_totals(api: Api, key: str, influencer: str) -> dict[str, Any]:
    body = query(
        api,
        key,
        f"/v1/influencers/{influencer}/metrics",
        metrics=",".join(METRICS),
        granularity="day",
        **day_range(),
    )
    totals: dict[str, Any] = body["totals"]
    return totals


def check_exactly_once(
    dep: Deployment, tenant: str, campaign: str, ledger: Ledger, api: Api, key: str
) -> list[dict[str, Any]]:
    """After the workers settled: every acknowledged event stored once, nothing else
    stored, and the query API equal to brute-force sums. Returns the stored events."""
    dep.settle()
    context = f"{ledger.summary()}\n{dep.logs()}"
    assert ledger.bad == [], context
    rows = dep.rows(
        "SELECT event_id, influencer_id, metric, value FROM events "
        "WHERE tenant_id = $1 AND campaign_id = $2",
        tenant,
        campaign,
    )
    ids = [row[0] for row in rows]
    stored = set(ids)
    twice = len(ids) - len(stored)
    assert twice == 0, f"{twice} events stored more than once\n{context}"
    lost = ledger.acked - stored
    assert not lost, (
        f"{len(lost)} acknowledged events not stored, e.g. {sorted(lost)[:3]}\n{context}"
    )
    # Every batch was retried until acknowledged, so nothing else may be stored.
    assert stored == ledger.acked, f"{len(stored - ledger.acked)} unknown events\n{context}"
    as_sent = {
        e: (ledger.sent[e]["influencer_id"], ledger.sent[e]["metric"], ledger.sent[e]["value"])
        for e in stored
    }
    assert {row[0]: tuple(row[1:]) for row in rows} == as_sent, context
    claimed = dep.rows(
        "SELECT count(*) FROM event_ids WHERE tenant_id = $1 AND event_id = ANY($2::text[])",
        tenant,
        ids,
    )
    assert claimed == [(len(stored),)], context

    events = [ledger.sent[e] for e in sorted(stored)]
    for metric in METRICS:
        want = sums(events, "influencer_id", metric)
        assert aggregate(api, key, metric, "influencer", campaign) == want, context
        assert aggregate(api, key, metric, "platform", campaign) == sums(
            events, "platform", metric
        ), context
    return events
