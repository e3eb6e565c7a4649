"""Live push end to end: WebSocket ``/v1/stream``, SSE ``/v1/stream/sse`` and stream tokens.

Every test starts its own server (in-thread uvicorn, real sockets; one test a
``hypemeter serve`` subprocess) and speaks to it as a client would: the
``websockets`` package for WebSocket, ``httpx`` streaming for SSE, and, where a
client must stop reading, a raw socket that does the WebSocket handshake by
hand. Live totals run from the start of the current UTC day, so every event that
should count carries a time between today's 00:00 UTC and now (``today``). A
tail sends one ``event`` message per commit, its events in ``events``. Ingest
goes through a worker thread so that the test's event loop keeps reading while
batches are posted. Every wait has a timeout, so a missing message fails the
test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from . import cluster
from .support import (
    LiveServer,
    ServerFactory,
    ServerProcess,
    bearer,
    cli,
    create_key,
    event,
    new_id,
    rfc3339,
    utc_now,
)

TIMEOUT = 10.0
FAST = {"decode_workers": 0}
NOW = {"live_coalesce_ms": 0}  # one update per commit: lets tests count updates


# -- time -------------------------------------------------------------------------------


def day_start() -> dt.datetime:
    return dt.datetime.combine(utc_now().date(), dt.time(), tzinfo=dt.UTC)


def today(fraction: float = 0.999) -> str:
    """An instant of today (UTC) at ``fraction`` of the way from 00:00 to now."""
    start = day_start()
    return rfc3339(start + (utc_now() - start) * fraction)


def day_range() -> dict[str, str]:
    start = day_start()
    return {"start": rfc3339(start), "end": rfc3339(start + dt.timedelta(days=1))}


def ev(**overrides: Any) -> dict[str, Any]:
    """An event of today (see ``event`` for the other defaults)."""
    return event(**{"ts": today(), **overrides})


# -- HTTP -------------------------------------------------------------------------------


async def ingest(srv: LiveServer, events: list[dict[str, Any]], key: str | None = None) -> Any:
    """POST events (acme's ingest key by default); every one must be accepted."""
    response = await asyncio.to_thread(srv.post_events, key or srv.keys["acme"].ingest, events)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rejected"] == [], body
    return body


async def query_totals(
    srv: LiveServer,
    influencer: str,
    metrics: str,
    key: str | None = None,
    *,
    of: str = "influencers",
    **params: str,
) -> dict[str, Any]:
    """Totals of the query API for today (or the given ``start``/``end``).

    ``of="campaigns"`` asks for the campaign ``influencer`` instead.
    """

    def get() -> httpx.Response:
        with srv.client(key or srv.keys["acme"].read) as client:
            return client.get(
                f"/v1/{of}/{influencer}/metrics",
                params={**day_range(), "granularity": "day", "metrics": metrics, **params},
            )

    response = await asyncio.to_thread(get)
    assert response.status_code == 200, response.text
    totals: dict[str, Any] = response.json()["totals"]
    return totals


async def request(
    srv: LiveServer, method: str, path: str, key: str | None, **kwargs: Any
) -> httpx.Response:
    def call() -> httpx.Response:
        with srv.client(key) as client:
            return client.request(method, path, **kwargs)

    return await asyncio.to_thread(call)


def same_numbers(actual: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Equal keys, and equal values (floats to 1e-9 relative; None only to None)."""
    if set(actual) != set(expected):
        return False
    for name, want in expected.items():
        got = actual[name]
        if want is None or got is None:
            if got is not want:
                return False
        elif not math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


# -- WebSocket --------------------------------------------------------------------------


def ws_url(srv: LiveServer, token: str | None = None) -> str:
    url = srv.url.replace("http://", "ws://", 1) + "/v1/stream"
    return f"{url}?token={token}" if token else url


class Live:
    """One WebSocket client and every message it received, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.log: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await asyncio.wait_for(self.ws.send(text), TIMEOUT)

    async def recv(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        message = json.loads(raw)
        assert isinstance(message, dict), message
        self.log.append(message)
        return message

    async def answer(self) -> dict[str, Any]:
        """The next message that is not a heartbeat."""
        while True:
            message = await self.recv()
            if message["type"] != "heartbeat":
                return message

    async def expect(self, kind: str, sub_id: str | None = None) -> dict[str, Any]:
        """Read up to the next message of ``kind`` (of ``sub_id``), skipping others."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self.recv()
                if message["type"] == kind and (sub_id is None or message.get("id") == sub_id):
                    return message

    async def subscribe(
        self,
        sub_id: str,
        live_filter: dict[str, str],
        metrics: list[str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Subscribe; the very next message must be its snapshot."""
        message: dict[str, Any] = {"op": "subscribe", "id": sub_id, "filter": live_filter}
        if metrics is not None:
            message["metrics"] = metrics
        await self.send({**message, **extra})
        snapshot = await self.answer()
        assert snapshot["type"] == "snapshot", snapshot
        assert snapshot["id"] == sub_id
        return snapshot

    async def error(self, message: dict[str, Any] | str) -> dict[str, Any]:
        """Send a message that must be refused; the very next message is the error."""
        await self.send(message)
        answer = await self.answer()
        assert answer["type"] == "error", answer
        return answer

    async def sync(self) -> list[dict[str, Any]]:
        """Ping; return what arrived before the pong."""
        start = len(self.log)
        await self.send({"op": "ping"})
        await self.expect("pong")
        return self.log[start:-1]

    async def until_totals(self, sub_id: str, totals: dict[str, Any]) -> list[dict[str, Any]]:
        """Read up to the update of ``sub_id`` whose totals are ``totals``; its updates."""
        seen: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    message = await self.recv()
                    if message["type"] == "update" and message["id"] == sub_id:
                        seen.append(message)
                        if same_numbers(message["totals"], totals):
                            return seen
        except TimeoutError:
            last = seen[-1]["totals"] if seen else None
            raise AssertionError(f"{sub_id}: never reached {totals}; last totals {last}") from None

    async def until_update(
        self, sub_id: str, check: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Read up to the first update of ``sub_id`` whose totals pass ``check``."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    message = await self.recv()
                    ours = message["type"] == "update" and message["id"] == sub_id
                    if ours and check(message["totals"]):
                        return message
        except TimeoutError:
            raise AssertionError(f"{sub_id}: no such update; last {self.latest(sub_id)}") from None

    def latest(self, sub_id: str) -> dict[str, Any]:
        """The totals of the last snapshot or update of ``sub_id`` received so far."""
        states = [
            m for m in self.log if m.get("id") == sub_id and m["type"] in ("snapshot", "update")
        ]
        assert states, f"nothing received for {sub_id}"
        totals: dict[str, Any] = states[-1]["totals"]
        return totals

    async def closed(self) -> int:
        """Read until the server closes; the close code it sent (1006: none)."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await self.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else 1006
        raise AssertionError("unreachable")  # pragma: no cover


@contextlib.asynccontextmanager
async def live(
    srv: LiveServer, key: str | None = None, *, token: str | None = None, **kwargs: Any
) -> AsyncIterator[Live]:
    """A WebSocket to ``/v1/stream`` with a key (Authorization header) or ``?token=``."""
    async with connect(
        ws_url(srv, token),
        additional_headers=bearer(key) if key else None,
        open_timeout=TIMEOUT,
        close_timeout=2,
        **kwargs,
    ) as ws:
        yield Live(ws)


async def refused(srv: LiveServer, key: str | None = None, *, token: str | None = None) -> str:
    """Open a WebSocket that the server must refuse: one error (seq 0), then close 1008."""
    async with live(srv, key, token=token) as ws:
        error = await ws.recv()
        assert error["type"] == "error", error
        assert error["seq"] == 0
        assert await ws.closed() == 1008
    code: str = error["code"]
    return code


# -- SSE --------------------------------------------------------------------------------


@dataclass
class SseEvent:
    id: int
    event: str
    data: dict[str, Any]


@dataclass
class Sse:
    response: httpx.Response
    comments: list[str] = field(default_factory=list)
    lines: AsyncIterator[str] | None = None

    async def next(self) -> SseEvent | None:
        """The next event, or None when the stream ended."""
        if self.lines is None:
            self.lines = self.response.aiter_lines()
        fields: dict[str, str] = {}
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    line = await anext(self.lines)
                except StopAsyncIteration:
                    return None
                if line.startswith(":"):
                    self.comments.append(line)
                elif line == "":
                    if fields:
                        return SseEvent(
                            int(fields["id"]), fields["event"], json.loads(fields["data"])
                        )
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

    async def expect(self, kind: str) -> SseEvent:
        got = await self.next()
        assert got is not None, "the stream ended"
        assert got.event == kind, got
        return got


@contextlib.asynccontextmanager
async def sse(
    srv: LiveServer,
    params: dict[str, str],
    key: str | None = None,
    *,
    last_event_id: int | str | None = None,
    path: str = "/v1/stream/sse",
) -> AsyncIterator[Sse]:
    headers = bearer(key) if key else {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    async with (
        httpx.AsyncClient(base_url=srv.url, timeout=TIMEOUT) as client,
        # (Empty params would drop a query string already in ``path``.)
        client.stream("GET", path, params=params or None, headers=headers) as response,
    ):
        yield Sse(response)


# -- a raw WebSocket client that can stop reading ------------------------------------------


class RawClient:
    """A hand-made WebSocket client on a socket with a small receive buffer.

    It reads only when told to, so the server's writes back up in TCP.
    """

    def __init__(self, srv: LiveServer, key: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", srv.port))
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {key}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during the handshake"
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.eof = False

    def send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def _parse(self) -> None:
        while len(self.buffer) >= 2:
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                (length,) = struct.unpack("!H", self.buffer[2:4])
                offset = 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                (length,) = struct.unpack("!Q", self.buffer[2:10])
                offset = 10
            if len(self.buffer) < offset + length:
                return
            payload = self.buffer[offset : offset + length]
            self.buffer = self.buffer[offset + length :]
            if opcode in (1, 2):
                self.messages.append(json.loads(payload))
            elif opcode == 8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005

    def read_until(self, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Read (blocking, with the socket's timeout) until ``done(messages)``."""
        while not done(self.messages):
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
            self._parse()

    def drain(self, quiet: float = 2.0) -> None:
        """Read everything until the server closes or stays silent for ``quiet`` seconds."""
        self.sock.settimeout(quiet)
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    self.eof = True
                    break
                self.buffer += chunk
                self._parse()
        except TimeoutError:
            pass
        except ConnectionResetError:
            self.eof = True
        self._parse()

    def close(self) -> None:
        self.sock.close()


# -- 1. snapshots and updates -------------------------------------------------------------

ENGAGEMENT = ["likes", "comments", "engagement"]


async def test_snapshot_then_updates_carry_exact_totals(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    inf = new_id("inf")
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("a", {"influencer_id": inf}, ENGAGEMENT, granularity="day")
        assert snap["filter"] == {"influencer_id": inf}
        assert snap["metrics"] == ENGAGEMENT
        assert snap["granularity"] == "day"
        assert snap["since"] == rfc3339(day_start())
        assert snap["totals"] == {"likes": 0, "comments": 0, "engagement": 0}
        assert snap["bucket"] == {
            "ts": rfc3339(day_start()),
            "likes": 0,
            "comments": 0,
            "engagement": 0,
        }

        await ingest(
            srv,
            [
                ev(influencer_id=inf, metric="likes", value=1),
                ev(influencer_id=inf, metric="likes", value=2),
                ev(influencer_id=inf, metric="comments", value=2),
            ],
        )
        update = await ws.expect("update", "a")
        # One commit, one update, nothing coalesced away or split.
        assert update["totals"] == {"likes": 3, "comments": 2, "engagement": 5}
        assert update["bucket"] == {
            "ts": rfc3339(day_start()),
            "likes": 3,
            "comments": 2,
            "engagement": 5,
        }
        assert update["deltas"] == [{"ts": rfc3339(day_start()), "likes": 3, "comments": 2}]
        committed = dt.datetime.fromisoformat(update["committed_at"])
        assert abs((utc_now() - committed).total_seconds()) < 60

        await ingest(
            srv,
            [
                ev(influencer_id=inf, metric="likes", value=4),
                ev(influencer_id=inf, metric="shares", value=10),  # not asked, but engagement
            ],
        )
        update = await ws.expect("update", "a")
        assert update["totals"] == {"likes": 7, "comments": 2, "engagement": 19}
        assert update["deltas"] == [{"ts": rfc3339(day_start()), "likes": 4}]


async def test_snapshot_reflects_events_ingested_before_subscribing(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    inf = new_id("inf")
    await ingest(
        srv,
        [
            ev(influencer_id=inf, metric="likes", value=5),
            ev(influencer_id=inf, metric="comments", value=4, ts=today(0.2)),
            ev(influencer_id=new_id("inf"), metric="likes", value=100),
        ],
    )
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("a", {"influencer_id": inf}, ENGAGEMENT, granularity="day")
        assert snap["totals"] == {"likes": 5, "comments": 4, "engagement": 9}
        await ingest(srv, [ev(influencer_id=inf, metric="comments", value=1)])
        update = await ws.expect("update", "a")
        assert update["totals"] == {"likes": 5, "comments": 5, "engagement": 10}
        # A second subscriber of the same channel starts from the current totals.
        async with live(srv, srv.keys["acme"].read) as other:
            snap = await other.subscribe("b", {"influencer_id": inf}, ENGAGEMENT, granularity="day")
            assert snap["totals"] == {"likes": 5, "comments": 5, "engagement": 10}


# -- 2. live totals equal the query API ------------------------------------------------------

TRUTH_METRICS = [
    "likes",
    "comments",
    "shares",
    "saves",
    "views",
    "clicks",
    "impressions",
    "engagement",
    "ctr",
    "engagement_rate_by_views",
]


async def test_live_totals_equal_the_query_api(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    inf, other, camp = new_id("inf"), new_id("inf"), new_id("camp")
    yesterday = rfc3339(day_start() - dt.timedelta(hours=1))
    duplicate = ev(influencer_id=inf, metric="likes", value=9, ts=today(0.4))
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.subscribe("t", {"influencer_id": inf}, TRUTH_METRICS, granularity="hour")
        await ws.subscribe("c", {"campaign_id": camp}, TRUTH_METRICS)
        first = await ingest(
            srv,
            [
                ev(influencer_id=inf, metric="likes", value=4, campaign_id=camp),
                ev(influencer_id=inf, platform="tiktok", metric="likes", value=2),
                ev(influencer_id=inf, platform="youtube", metric="comments", value=3),
                ev(influencer_id=inf, metric="shares", value=1, campaign_id=camp),
                ev(influencer_id=inf, metric="saves", value=2),
                ev(influencer_id=inf, metric="clicks", value=5, campaign_id=camp),
                ev(influencer_id=inf, metric="impressions", value=200, campaign_id=camp),
                ev(
                    influencer_id=inf,
                    metric="views",
                    kind="snapshot",
                    value=1000,
                    content_id="vid-1",
                    ts=today(0.5),
                ),
            ],
        )
        assert first["accepted"] == 8
        second = await ingest(
            srv,
            [
                ev(
                    influencer_id=inf,
                    metric="views",
                    kind="snapshot",
                    value=1300,
                    content_id="vid-1",
                    ts=today(0.6),
                ),
                ev(influencer_id=inf, metric="likes", value=7, ts=today(0.001)),  # late
                ev(influencer_id=inf, metric="likes", value=100, ts=yesterday),  # before since
                ev(influencer_id=other, metric="likes", value=50, campaign_id=camp),
                duplicate,
            ],
        )
        assert second["accepted"] == 5
        third = await ingest(
            srv,
            [
                duplicate,
                # An older reading than the last one seen counts nothing.
                ev(
                    influencer_id=inf,
                    metric="views",
                    kind="snapshot",
                    value=1200,
                    content_id="vid-1",
                    ts=today(0.55),
                ),
            ],
        )
        assert (third["accepted"], third["duplicates"]) == (1, 1)

        engagement = 22 + 3 + 1 + 2
        expected = {
            "likes": 22,
            "comments": 3,
            "shares": 1,
            "saves": 2,
            "views": 1300,
            "clicks": 5,
            "impressions": 200,
            "engagement": engagement,
            "ctr": 2.5,
            "engagement_rate_by_views": engagement / 1300 * 100,
        }
        updates = await ws.until_totals("t", expected)
        # The third batch changed nothing: what comes after holds the same totals.
        updates += [m for m in await ws.sync() if m["type"] == "update" and m["id"] == "t"]
        assert same_numbers(updates[-1]["totals"], expected)
        truth = await query_totals(srv, inf, ",".join(TRUTH_METRICS))
        assert same_numbers(truth, expected), truth
        assert same_numbers(updates[-1]["totals"], truth)
        # The deltas of all updates add up to the totals of the stored metrics.
        for name in ("likes", "comments", "shares", "saves", "views", "clicks", "impressions"):
            summed = sum(d.get(name, 0) for u in updates for d in u["deltas"])
            assert summed == expected[name], name

        # The campaign's subscription: two influencers, the campaign's events only.
        for_campaign = {
            **{name: 0 for name in TRUTH_METRICS},
            "likes": 54,
            "shares": 1,
            "clicks": 5,
            "impressions": 200,
            "engagement": 55,
            "ctr": 2.5,
            "engagement_rate_by_views": None,
        }
        # Its last update comes from the same commits as the influencer's, but each
        # subscription coalesces on its own: it may still be due when the ping returns.
        if not same_numbers(ws.latest("c"), for_campaign):
            await ws.until_totals("c", for_campaign)
        truth = await query_totals(srv, camp, ",".join(TRUTH_METRICS), of="campaigns")
        assert same_numbers(truth, for_campaign), truth


FOLLOWER_METRICS = ["likes", "followers", "engagement_rate", "follower_growth"]


async def test_follower_based_metrics_update_live(make_server: ServerFactory) -> None:
    """The followers reading at the start of the range predates the subscription."""
    srv = make_server(**FAST)
    inf = new_id("inf")
    await ingest(
        srv,
        [
            ev(influencer_id=inf, metric="followers", kind="snapshot", value=1000, ts=today(0.1)),
            ev(influencer_id=inf, metric="likes", value=10, ts=today(0.2)),
        ],
    )
    metrics = ",".join(FOLLOWER_METRICS)
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("f", {"influencer_id": inf}, FOLLOWER_METRICS, granularity="day")
        truth = await query_totals(srv, inf, metrics)
        assert same_numbers(
            truth, {"likes": 10, "followers": 1000, "engagement_rate": 1.0, "follower_growth": 0}
        ), truth
        assert same_numbers(snap["totals"], truth), snap["totals"]

        await ingest(
            srv,
            [
                ev(influencer_id=inf, metric="followers", kind="snapshot", value=1100),
                ev(influencer_id=inf, metric="likes", value=5),
            ],
        )
        expected = {"likes": 15, "followers": 1100, "engagement_rate": 1.5, "follower_growth": 100}
        updates = await ws.until_totals("f", expected)
        assert same_numbers(await query_totals(srv, inf, metrics), updates[-1]["totals"])


async def test_first_follower_reading_after_subscribing_matches_the_query(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    inf = new_id("inf")
    metrics = ",".join(FOLLOWER_METRICS)
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("f", {"influencer_id": inf}, FOLLOWER_METRICS, granularity="day")
        assert snap["totals"] == {
            "likes": 0,
            "followers": None,
            "engagement_rate": None,
            "follower_growth": None,
        }
        await ingest(
            srv,
            [
                ev(influencer_id=inf, metric="followers", kind="snapshot", value=1000),
                ev(influencer_id=inf, metric="likes", value=10),
            ],
        )
        update = await ws.expect("update", "f")
        truth = await query_totals(srv, inf, metrics)
        assert same_numbers(
            truth, {"likes": 10, "followers": 1000, "engagement_rate": 1.0, "follower_growth": 0}
        ), truth
        assert update["totals"] == truth


async def test_new_account_reading_after_subscribing_matches_the_query(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    inf = new_id("inf")
    metrics = ",".join(FOLLOWER_METRICS)
    await ingest(
        srv,
        [ev(influencer_id=inf, metric="followers", kind="snapshot", value=1000, ts=today(0.1))],
    )
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.subscribe("f", {"influencer_id": inf}, FOLLOWER_METRICS, granularity="day")
        await ingest(
            srv,
            [
                ev(
                    influencer_id=inf,
                    platform="tiktok",
                    metric="followers",
                    kind="snapshot",
                    value=500,
                ),
                ev(influencer_id=inf, metric="likes", value=15),
            ],
        )
        update = await ws.expect("update", "f")
        truth = await query_totals(srv, inf, metrics)
        assert same_numbers(
            truth, {"likes": 15, "followers": 1500, "engagement_rate": 1.0, "follower_growth": 0}
        ), truth
        assert update["totals"] == truth


async def test_late_follower_reading_matches_the_query(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    inf = new_id("inf")
    metrics = ",".join(FOLLOWER_METRICS)
    await ingest(
        srv,
        [
            ev(influencer_id=inf, metric="followers", kind="snapshot", value=1000, ts=today(0.5)),
            ev(influencer_id=inf, metric="likes", value=9),
        ],
    )
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("f", {"influencer_id": inf}, FOLLOWER_METRICS, granularity="day")
        assert same_numbers(snap["totals"], await query_totals(srv, inf, metrics))
        late = {"metric": "followers", "kind": "snapshot", "value": 900, "ts": today(0.2)}
        await ingest(srv, [ev(influencer_id=inf, **late)])
        update = await ws.expect("update", "f")
        truth = await query_totals(srv, inf, metrics)
        assert same_numbers(
            truth, {"likes": 9, "followers": 1000, "engagement_rate": 1.0, "follower_growth": 100}
        ), truth
        assert same_numbers(update["totals"], truth), update["totals"]


async def test_late_follower_reading_before_since_matches_the_query(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    inf = new_id("inf")
    metrics = ",".join(FOLLOWER_METRICS)
    await ingest(
        srv,
        [
            ev(influencer_id=inf, metric="followers", kind="snapshot", value=1000, ts=today(0.5)),
            ev(influencer_id=inf, metric="likes", value=10),
        ],
    )
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("f", {"influencer_id": inf}, FOLLOWER_METRICS, granularity="day")
        assert same_numbers(
            snap["totals"],
            {"likes": 10, "followers": 1000, "engagement_rate": 1.0, "follower_growth": 0},
        ), snap["totals"]
        # Yesterday's reading, late: the account's followers at the start of today.
        yesterday = rfc3339(day_start() - dt.timedelta(hours=2))
        late = {"metric": "followers", "kind": "snapshot", "value": 800, "ts": yesterday}
        await ingest(srv, [ev(influencer_id=inf, **late)])
        # A like afterwards: its update comes after any the reading brought.
        await ingest(srv, [ev(influencer_id=inf, metric="likes", value=1)])
        update = await ws.until_update("f", lambda totals: totals["likes"] == 11)
        truth = await query_totals(srv, inf, metrics)
        assert same_numbers(
            truth,
            {"likes": 11, "followers": 1000, "engagement_rate": 1.375, "follower_growth": 200},
        ), truth
        assert same_numbers(update["totals"], truth), update["totals"]


async def test_campaign_member_follower_reading_matches_the_query(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    inf, camp = new_id("inf"), new_id("camp")
    metrics = ",".join(FOLLOWER_METRICS)
    await ingest(
        srv,
        [
            ev(influencer_id=inf, metric="followers", kind="snapshot", value=1000, ts=today(0.1)),
            ev(influencer_id=inf, metric="likes", value=10, campaign_id=camp, ts=today(0.2)),
        ],
    )
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("c", {"campaign_id": camp}, FOLLOWER_METRICS, granularity="day")
        truth = await query_totals(srv, camp, metrics, of="campaigns")
        assert same_numbers(
            truth, {"likes": 10, "followers": 1000, "engagement_rate": 1.0, "follower_growth": 0}
        ), truth
        assert same_numbers(snap["totals"], truth), snap["totals"]
        reading = {"metric": "followers", "kind": "snapshot", "value": 1200}
        await ingest(srv, [ev(influencer_id=inf, **reading)])
        await ingest(srv, [ev(influencer_id=inf, metric="likes", value=5, campaign_id=camp)])
        update = await ws.until_update("c", lambda totals: totals["likes"] == 15)
        truth = await query_totals(srv, camp, metrics, of="campaigns")
        assert same_numbers(
            truth,
            {"likes": 15, "followers": 1200, "engagement_rate": 1.5, "follower_growth": 200},
        ), truth
        assert same_numbers(update["totals"], truth), update["totals"]


async def test_new_campaign_member_matches_the_query(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    inf, newcomer, camp = new_id("inf"), new_id("inf"), new_id("camp")
    metrics = ",".join(FOLLOWER_METRICS)
    await ingest(
        srv,
        [
            ev(influencer_id=inf, metric="followers", kind="snapshot", value=1000, ts=today(0.1)),
            ev(
                influencer_id=newcomer,
                metric="followers",
                kind="snapshot",
                value=500,
                ts=today(0.1),
            ),
            ev(influencer_id=inf, metric="likes", value=10, campaign_id=camp, ts=today(0.2)),
        ],
    )
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("c", {"campaign_id": camp}, FOLLOWER_METRICS, granularity="day")
        assert same_numbers(
            snap["totals"],
            {"likes": 10, "followers": 1000, "engagement_rate": 1.0, "follower_growth": 0},
        ), snap["totals"]
        await ingest(srv, [ev(influencer_id=newcomer, metric="likes", value=5, campaign_id=camp)])
        update = await ws.until_update("c", lambda totals: totals["likes"] == 15)
        truth = await query_totals(srv, camp, metrics, of="campaigns")
        assert same_numbers(
            truth, {"likes": 15, "followers": 1500, "engagement_rate": 1.0, "follower_growth": 0}
        ), truth
        assert same_numbers(update["totals"], truth), update["totals"]


async def test_since_leaves_out_earlier_events(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    inf = new_id("inf")
    since = today(0.5)
    await ingest(
        srv,
        [
            ev(influencer_id=inf, metric="likes", value=3, ts=today(0.3)),
            ev(influencer_id=inf, metric="likes", value=4, ts=today(0.7)),
        ],
    )
    async with live(srv, srv.keys["acme"].read) as ws:
        snap = await ws.subscribe("s", {"influencer_id": inf}, ["likes"], since=since)
        assert snap["since"] == since
        assert snap["totals"] == {"likes": 4}
        await ingest(
            srv,
            [
                ev(influencer_id=inf, metric="likes", value=10, ts=today(0.2)),  # before since
                ev(influencer_id=inf, metric="likes", value=1, ts=today(0.9)),
            ],
        )
        update = await ws.expect("update", "s")
        assert update["totals"] == {"likes": 5}
        truth = await query_totals(srv, inf, "likes", start=since)
        assert truth == {"likes": 5}


async def test_updates_are_coalesced(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, live_coalesce_ms=3000)
    inf = new_id("inf")
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.subscribe("c", {"influencer_id": inf}, ["likes"])
        await ingest(srv, [ev(influencer_id=inf, value=1)])
        posted = time.monotonic()
        first = await ws.expect("update", "c")
        first_at = time.monotonic()
        # Nothing was sent in the last interval: the first update goes out at once.
        assert first_at - posted < 2.5
        assert first["totals"] == {"likes": 1}
        for value in (2, 3, 4):
            await ingest(srv, [ev(influencer_id=inf, value=value)])
        second = await ws.expect("update", "c")
        assert time.monotonic() - first_at > 2.5
        # The three commits arrive as one update whose deltas hold all of them.
        assert second["totals"] == {"likes": 10}
        assert sum(d["likes"] for d in second["deltas"]) == 9
        assert second["seq"] == first["seq"] + 1


# -- 3. isolation -------------------------------------------------------------------------


async def test_filters_isolate_subscriptions(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, **NOW)
    inf, other = new_id("inf"), new_id("inf")
    camp, post = new_id("camp"), new_id("post")
    filters = {
        "inf": {"influencer_id": inf},
        "platform": {"influencer_id": inf, "platform": "tiktok"},
        "campaign": {"campaign_id": camp},
        "content": {"content_id": post},
        "narrow": {"influencer_id": inf, "campaign_id": camp, "platform": "youtube"},
    }
    batches = [
        [ev(influencer_id=other, value=1)],
        [ev(influencer_id=other, value=2, campaign_id=camp, platform="tiktok")],
        [ev(influencer_id=inf, value=4, platform="instagram")],
        [ev(influencer_id=inf, value=8, content_id=post, platform="youtube")],
        [ev(influencer_id=inf, value=16, campaign_id=new_id("camp"), platform="tiktok")],
        [ev(influencer_id=other, value=32, content_id=post)],
        [ev(influencer_id=inf, value=64, campaign_id=camp, platform="youtube", content_id=post)],
    ]

    # Running likes totals of each subscription, one update per batch that matches it.
    expected = {
        "inf": [4, 12, 28, 92],
        "platform": [16],
        "campaign": [2, 66],
        "content": [8, 40, 104],
        "narrow": [64],
    }
    async with live(srv, srv.keys["acme"].read) as ws:
        for sub_id, live_filter in filters.items():
            await ws.subscribe(sub_id, live_filter, ["likes"])
        for batch in batches:
            await ingest(srv, batch)
        got: dict[str, list[int]] = {sub_id: [] for sub_id in filters}
        async with asyncio.timeout(TIMEOUT):
            while any(len(got[s]) < len(expected[s]) for s in filters):
                message = await ws.recv()
                assert message["type"] == "update", message
                got[message["id"]].append(message["totals"]["likes"])
        assert not [m for m in await ws.sync() if m["type"] == "update"]
        assert got == expected


async def test_tenants_isolate(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, **NOW)
    acme, globex = srv.keys["acme"], srv.keys["globex"]
    inf = new_id("inf")  # the same influencer id in both tenants
    async with live(srv, acme.read) as a, live(srv, globex.read) as g:
        await a.subscribe("x", {"influencer_id": inf}, ["likes"])
        await a.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        await a.expect("tailing", "t")
        await g.subscribe("x", {"influencer_id": inf}, ["likes"])
        for value in (100, 200):
            await ingest(srv, [ev(influencer_id=inf, value=value)], globex.ingest)
        await ingest(srv, [ev(influencer_id=inf, value=1, text="acme's")], acme.ingest)
        # acme's subscriber sees its own sentinel first and nothing of globex.
        # (The update and the tailed event of one commit may come in either order.)
        first, second = await a.recv(), await a.recv()
        by_type = {first["type"]: first, second["type"]: second}
        assert set(by_type) == {"update", "event"}, (first, second)
        assert by_type["update"]["totals"] == {"likes": 1}
        assert [e["text"] for e in by_type["event"]["events"]] == ["acme's"]
        assert not [m for m in await a.sync() if m["type"] in ("update", "event")]
        # globex's subscriber saw globex's two commits only.
        totals = [m["totals"]["likes"] for m in await g.sync() if m["type"] == "update"]
        assert totals == [100, 300]


# -- 4. errors and authentication ----------------------------------------------------------


async def test_errors_keep_the_connection_open(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    inf = new_id("inf")
    good = {"influencer_id": inf}
    future = rfc3339(utc_now() + dt.timedelta(hours=1))
    async with live(srv, srv.keys["acme"].read) as ws:
        error = await ws.error(
            {"op": "subscribe", "id": "e1", "filter": good, "metrics": ["likes", "nope"]}
        )
        assert (error["code"], error["field"], error["id"]) == ("invalid_input", "metrics", "e1")
        assert "nope" in error["message"]
        assert "allowed" in error["message"]
        for name in ("likes", "comments", "engagement_rate", "ctr"):
            assert name in error["message"]

        cases: list[tuple[dict[str, Any] | str, str | None]] = [
            ({"op": "subscribe", "id": "e3"}, "filter"),
            ({"op": "subscribe", "id": "e4", "filter": "tiktok"}, "filter"),
            ({"op": "subscribe", "id": "e5", "filter": {**good, "nope": "x"}}, "filter.nope"),
            (
                {"op": "subscribe", "id": "e6", "filter": {**good, "platform": "myspace"}},
                "filter.platform",
            ),
            ({"op": "subscribe", "id": "e7", "filter": good, "granularity": "week"}, "granularity"),
            ({"op": "subscribe", "id": "e8", "filter": good, "since": future}, "since"),
            ({"op": "subscribe", "id": "e9", "filter": good, "since": "yesterday"}, "since"),
            ({"op": "subscribe", "id": "e10", "filter": good, "metrics": []}, "metrics"),
            ({"op": "subscribe", "id": "e11", "filter": good, "metrics": {"likes": 1}}, "metrics"),
            (
                {"op": "subscribe", "id": "e12", "filter": good, "metrics": ["unique_users"]},
                "metrics",
            ),
            ({"op": "subscribe", "filter": good}, "id"),
            ({"op": "subscribe", "id": "", "filter": good}, "id"),
            ({"op": "tail", "id": "e13", "filter": {"campaign_id": "c"}}, "filter"),
            ({"op": "unsubscribe", "id": "never"}, "id"),
            ({"op": "dance", "id": "e14"}, "op"),
            ({"id": "e15"}, "op"),
            ("[1, 2]", "op"),
            ("this is not JSON", None),
            ("x" * 70_000, None),
        ]
        for message, where in cases:
            error = await ws.error(message)
            assert error["code"] == "invalid_input", (message, error)
            sub_id = message.get("id") if isinstance(message, dict) else None
            assert error.get("field") == where, (message, error)
            if sub_id:
                assert error["id"] == sub_id

        # A duplicate id is refused; the first subscription keeps working.
        await ws.subscribe("a", good, ["likes"])
        error = await ws.error(
            {"op": "subscribe", "id": "a", "filter": good, "metrics": ["shares"]}
        )
        assert (error["field"], error["id"]) == ("id", "a")
        error = await ws.error({"op": "tail", "id": "a", "filter": good})
        assert (error["field"], error["id"]) == ("id", "a")

        # After all that, the connection serves a new subscription as usual.
        snap = await ws.subscribe("z", good, ["likes", "comments"])
        assert snap["totals"] == {"likes": 0, "comments": 0}
        await ingest(srv, [ev(influencer_id=inf, metric="comments", value=2)])
        await ws.until_totals("z", {"likes": 0, "comments": 2})
        assert [m["type"] for m in await ws.sync()] in ([], ["update"])


async def test_authentication_failures_close_with_1008(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    keys = srv.keys["acme"]
    assert await refused(srv) == "unauthenticated"
    assert await refused(srv, "hm_000000000000_notakeyatallnotakeyatall") == "unauthenticated"
    assert await refused(srv, token="hm_000000000000_notakeyatallnotakeyatall") == (
        "unauthenticated"
    )
    assert await refused(srv, token="hst_forged") == "unauthenticated"
    assert await refused(srv, keys.ingest) == "forbidden"
    assert await refused(srv, token=keys.ingest) == "forbidden"
    # A read key works in the header and as ?token=.
    for key, token in ((keys.read, None), (None, keys.read)):
        async with live(srv, key, token=token) as ws:
            assert await ws.sync() == []
            assert (ws.log[-1]["type"], ws.log[-1]["seq"]) == ("pong", 1)


async def test_messages_are_json_text_frames(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.send({"op": "ping"})
        raw = await asyncio.wait_for(ws.ws.recv(), TIMEOUT)
        assert json.loads(raw)["type"] == "pong"
        assert isinstance(raw, str), f"a binary frame: {raw!r}"


async def test_hypemeter_serve_sends_uncompressed_text_frames(
    tmp_path: Path, spawn: Callable[[Path], ServerProcess]
) -> None:
    """As ``hypemeter serve`` runs: no permessage-deflate even when the client offers it."""
    data = tmp_path / "data"
    cli("tenants", "create", "acme", "--data", str(data))
    _, read = create_key(data, "acme", "read")
    server = spawn(data)
    url = server.url.replace("http://", "ws://", 1) + "/v1/stream"
    async with connect(
        url, additional_headers=bearer(read), compression="deflate", open_timeout=TIMEOUT
    ) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers, ws.response.headers
        await ws.send(json.dumps({"op": "ping"}))
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(raw, str), f"a binary frame: {raw!r}"
        assert json.loads(raw)["type"] == "pong"


async def test_websocket_heartbeats_come_after_quiet_spells_only(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST, live_heartbeat_seconds=0.5)
    async with live(srv, srv.keys["acme"].read) as ws:
        # Busy: a message every ~0.1 s, so never a quiet 0.5 s, and no heartbeat.
        for _ in range(15):
            assert await ws.sync() == []
            await asyncio.sleep(0.1)
        await ws.sync()
        quiet_from = time.monotonic()
        assert [m["type"] for m in ws.log] == ["pong"] * 16
        # Quiet: a heartbeat after each quiet spell of 0.5 s, and nothing else.
        arrivals = []
        for _ in range(3):
            beat = await ws.recv()
            arrivals.append(time.monotonic())
            assert beat["type"] == "heartbeat", beat
        gaps = [b - a for a, b in itertools.pairwise([quiet_from, *arrivals])]
        assert all(0.35 < gap < 3.0 for gap in gaps), gaps
        assert [m["seq"] for m in ws.log] == list(range(1, 20))


# -- 5. seq -------------------------------------------------------------------------------


async def test_seq_increases_by_one_per_message(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, **NOW, live_heartbeat_seconds=0.3)
    inf = new_id("inf")
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.subscribe("a", {"influencer_id": inf}, ["likes"])
        await ws.subscribe("b", {"influencer_id": inf, "platform": "tiktok"}, ["likes"])
        await ws.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        await ws.expect("tailing", "t")
        await ws.error({"op": "nope"})
        await ingest(srv, [ev(influencer_id=inf), ev(influencer_id=inf, platform="tiktok")])
        await ws.until_totals("b", {"likes": 1})
        await ws.expect("heartbeat")
        await ws.send({"op": "unsubscribe", "id": "a"})
        await ws.expect("unsubscribed", "a")
        await ingest(srv, [ev(influencer_id=inf, platform="tiktok")])
        await ws.until_totals("b", {"likes": 2})
        await ws.sync()
        kinds = {m["type"] for m in ws.log}
        assert kinds == {
            "snapshot",
            "tailing",
            "error",
            "update",
            "event",
            "heartbeat",
            "unsubscribed",
            "pong",
        }
        assert [m["seq"] for m in ws.log] == list(range(1, len(ws.log) + 1))
        # Nothing of "a" arrives once it is unsubscribed.
        gone = next(i for i, m in enumerate(ws.log) if m["type"] == "unsubscribed")
        assert not [m for m in ws.log[gone + 1 :] if m.get("id") == "a"]
        heartbeat = next(m for m in ws.log if m["type"] == "heartbeat")
        assert abs((utc_now() - dt.datetime.fromisoformat(heartbeat["ts"])).total_seconds()) < 60


# -- 6. tail ------------------------------------------------------------------------------


async def test_tail_sends_raw_events_of_the_tailed_influencer_only(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    inf, other, post = new_id("inf"), new_id("inf"), new_id("post")
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        tailing = await ws.recv()
        assert tailing == {"type": "tailing", "id": "t", "filter": {"influencer_id": inf}, "seq": 1}
        await ws.send({"op": "tail", "id": "c", "filter": {"content_id": post}})
        await ws.expect("tailing", "c")

        noise = ev(influencer_id=other, metric="comments", text="not yours")
        mine = ev(
            influencer_id=inf,
            platform="tiktok",
            content_id="post-x",
            campaign_id="camp-1",
            metric="comments",
            value=1,
            user_id="u-42",
            text="love this \u2728 <b>html</b> stays as is",
            tags=["fyp", "summer"],
            ts=today(0.9),
        )
        await ingest(srv, [noise])
        await ingest(srv, [mine])
        message = await ws.recv()
        assert set(message) == {"type", "id", "events", "seq"}, message
        assert message["type"] == "event"
        assert message["id"] == "t"
        assert message["events"] == [
            {
                "event_id": mine["event_id"],
                "influencer_id": inf,
                "platform": "tiktok",
                "content_id": "post-x",
                "campaign_id": "camp-1",
                "metric": "comments",
                "kind": "delta",
                "value": 1,
                "delta": 1,
                "ts": mine["ts"],
                "user_id": "u-42",
                "text": mine["text"],
                "tags": ["fyp", "summer"],
            }
        ]

        # A duplicate is not tailed again; a snapshot reading shows its counted delta.
        # One message per commit, whatever it holds.
        views = {"influencer_id": inf, "metric": "views", "kind": "snapshot"}
        await ingest(srv, [mine, ev(**views, value=100, ts=today(0.5))])
        await ingest(srv, [ev(**views, value=130, ts=today(0.6))])
        first, second = await ws.recv(), await ws.recv()
        assert (first["type"], second["type"]) == ("event", "event")
        assert [(e["value"], e["delta"], e["kind"]) for e in first["events"]] == [
            (100, 100, "snapshot")
        ]
        assert [(e["value"], e["delta"]) for e in second["events"]] == [(130, 30)]
        assert second["seq"] == first["seq"] + 1

        # Several events of one commit: one message holding all of them, in order.
        batch = [ev(influencer_id=inf, metric="comments", text=f"c{i}") for i in range(5)]
        await ingest(srv, [*batch, ev(influencer_id=other, text="not yours either")])
        message = await ws.recv()
        assert (message["type"], message["id"]) == ("event", "t")
        assert [e["event_id"] for e in message["events"]] == [e["event_id"] for e in batch]
        assert [e["text"] for e in message["events"]] == [f"c{i}" for i in range(5)]

        # A content tail follows the content item whoever posts about it.
        await ingest(
            srv,
            [
                ev(influencer_id=other, content_id=post, metric="comments", text="on the post"),
                ev(influencer_id=other, content_id="elsewhere", text="elsewhere"),
            ],
        )
        message = await ws.recv()
        assert (message["type"], message["id"]) == ("event", "c")
        assert [e["text"] for e in message["events"]] == ["on the post"]
        assert not [m for m in await ws.sync() if m["type"] == "event"]


# -- 7. stream tokens ---------------------------------------------------------------------


async def issue_token(srv: LiveServer, body: dict[str, Any], key: str) -> dict[str, Any]:
    response = await request(srv, "POST", "/v1/metrics/subscribe", key, json=body)
    assert response.status_code == 201, response.text
    payload: dict[str, Any] = response.json()
    return payload


async def test_stream_token_is_limited_to_its_filter_and_metrics(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    keys = srv.keys["acme"]
    inf = new_id("inf")
    body = {
        "influencer_id": inf,
        "metrics": ["likes", "comments"],
        "granularity": "hour",
        "tail": True,
    }
    issued = await issue_token(srv, body, keys.read)
    token = issued["token"]
    assert set(issued) == {"subscription_id", "stream_url", "sse_url", "token", "expires_at"}
    assert token.startswith("hst_")
    assert keys.read not in json.dumps(issued)
    # Percent-encoded query strings: read them back as a client would.
    stream_url, sse_url = urlsplit(issued["stream_url"]), urlsplit(issued["sse_url"])
    assert (stream_url.path, parse_qsl(stream_url.query)) == ("/v1/stream", [("token", token)])
    assert sse_url.path == "/v1/stream/sse"
    assert parse_qsl(sse_url.query) == [
        ("influencer_id", inf),
        ("metrics", "likes,comments"),
        ("granularity", "hour"),
        ("token", token),
    ]
    expires = dt.datetime.fromisoformat(issued["expires_at"])
    assert 3500 < (expires - utc_now()).total_seconds() <= 3600

    async with live(srv, token=token) as ws:
        snap = await ws.subscribe("ok", {"influencer_id": inf}, ["likes", "comments"])
        assert snap["totals"] == {"likes": 0, "comments": 0}
        # Narrower is fine: a platform, or fewer metrics.
        await ws.subscribe("narrow", {"influencer_id": inf, "platform": "tiktok"}, ["likes"])
        await ws.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        await ws.expect("tailing", "t")
        wider: list[tuple[dict[str, Any], str]] = [
            ({"filter": {"influencer_id": new_id("inf")}, "metrics": ["likes"]}, "filter"),
            ({"filter": {"campaign_id": "camp-1"}, "metrics": ["likes"]}, "filter"),
            ({"filter": {"content_id": "post-1"}, "metrics": ["likes"]}, "filter"),
            ({"filter": {"influencer_id": inf}, "metrics": ["likes", "shares"]}, "metrics"),
            ({"filter": {"influencer_id": inf}, "metrics": ["engagement"]}, "metrics"),
            ({"filter": {"influencer_id": inf}}, "metrics"),  # the default metrics
        ]
        for number, (message, where) in enumerate(wider):
            error = await ws.error({"op": "subscribe", "id": f"w{number}", **message})
            assert (error["code"], error["field"]) == ("forbidden", where), (message, error)
        error = await ws.error(
            {"op": "tail", "id": "wt", "filter": {"influencer_id": new_id("inf")}}
        )
        assert error["code"] == "forbidden"
        # The allowed subscriptions still work.
        await ingest(srv, [ev(influencer_id=inf, metric="comments", value=3)])
        await ws.until_totals("ok", {"likes": 0, "comments": 3})

    # A token is no API key: the query API refuses it, and it cannot mint tokens.
    response = await request(srv, "GET", f"/v1/influencers/{inf}/metrics", token)
    assert response.status_code == 401
    response = await request(srv, "POST", "/v1/metrics/subscribe", token, json=body)
    assert response.status_code == 401
    # Only read keys get tokens; a filter names only known fields.
    response = await request(srv, "POST", "/v1/metrics/subscribe", keys.ingest, json=body)
    assert response.status_code == 403
    response = await request(srv, "POST", "/v1/metrics/subscribe", keys.read, json={"shop": "x"})
    assert response.status_code == 422
    response = await request(
        srv, "POST", "/v1/metrics/subscribe", keys.read, json={**body, "metrics": ["nope"]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "metrics"


async def test_revoking_a_stream_token_closes_its_streams(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    acme, globex = srv.keys["acme"], srv.keys["globex"]
    inf = new_id("inf")
    issued = await issue_token(srv, {"influencer_id": inf, "metrics": ["likes"]}, acme.read)
    token, sub_id = issued["token"], issued["subscription_id"]
    path = f"/v1/metrics/subscribe/{sub_id}"
    async with live(srv, token=token) as ws, sse(srv, {}, path=issued["sse_url"]) as stream:
        await ws.subscribe("a", {"influencer_id": inf}, ["likes"])
        assert stream.response.status_code == 200
        first = await stream.expect("snapshot")
        assert first.data["totals"] == {"likes": 0}
        await ingest(srv, [ev(influencer_id=inf, value=2)])
        await ws.until_totals("a", {"likes": 2})
        assert (await stream.expect("update")).data["totals"] == {"likes": 2}

        # Another tenant cannot see or revoke it; an unknown id is a 404 too.
        assert (await request(srv, "DELETE", path, globex.read)).status_code == 404
        unknown = "/v1/metrics/subscribe/sub_0000000000000000"
        assert (await request(srv, "DELETE", unknown, acme.read)).status_code == 404
        await ingest(srv, [ev(influencer_id=inf, value=1)])
        await ws.until_totals("a", {"likes": 3})  # still open

        response = await request(srv, "DELETE", path, acme.read)
        assert response.status_code == 200, response.text
        assert response.json() == {"subscription_id": sub_id, "closed_streams": 2}
        assert await ws.closed() == 1008
        rest: list[SseEvent] = []
        while (got := await stream.next()) is not None:
            rest.append(got)
        # The SSE stream ends with an error event that says why.
        assert [e.event for e in rest] in (["error"], ["update", "error"])
        assert rest[-1].data == {"code": "unauthenticated", "message": "stream token revoked"}

    # The token no longer authenticates anything; a second DELETE is a 404.
    assert await refused(srv, token=token) == "unauthenticated"
    async with sse(srv, {}, path=issued["sse_url"]) as stream:
        assert stream.response.status_code == 401
    assert (await request(srv, "DELETE", path, acme.read)).status_code == 404


async def test_sse_url_of_a_token_works_for_any_influencer_id(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    # Ids are any string of 1 to 256 characters: '&', '#', '+', ' ', '=', '%' included.
    inf = f"Brand&Co #1+2 =50%\u00e9{new_id('')}"
    await ingest(srv, [ev(influencer_id=inf, value=4)])
    issued = await issue_token(
        srv, {"influencer_id": inf, "metrics": ["likes"]}, srv.keys["acme"].read
    )
    async with sse(srv, {}, path=issued["sse_url"]) as stream:
        assert stream.response.status_code == 200, await stream.response.aread()
        snap = await stream.expect("snapshot")
        assert (snap.data["filter"], snap.data["totals"]) == ({"influencer_id": inf}, {"likes": 4})


# -- 8. SSE -------------------------------------------------------------------------------


async def test_sse_snapshot_then_updates(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, **NOW)
    inf = new_id("inf")
    params = {"influencer_id": inf, "metrics": "likes,comments", "granularity": "day"}
    await ingest(srv, [ev(influencer_id=inf, value=5)])
    async with sse(srv, params, srv.keys["acme"].read) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        snap = await stream.expect("snapshot")
        assert snap.data["totals"] == {"likes": 5, "comments": 0}
        assert snap.data["filter"] == {"influencer_id": inf}
        assert snap.data["metrics"] == ["likes", "comments"]
        assert snap.data["bucket"] == {"ts": rfc3339(day_start()), "likes": 5, "comments": 0}
        await ingest(srv, [ev(influencer_id=inf, value=2)])
        await ingest(srv, [ev(influencer_id=inf, metric="comments", value=1)])
        await ingest(srv, [ev(influencer_id=new_id("inf"), metric="comments", value=1)])
        await ingest(srv, [ev(influencer_id=inf, value=3)])
        updates = [await stream.expect("update") for _ in range(3)]
        assert [u.data["totals"] for u in updates] == [
            {"likes": 7, "comments": 0},
            {"likes": 7, "comments": 1},
            {"likes": 10, "comments": 1},
        ]
        assert [u.id for u in updates] == [snap.id + 1, snap.id + 2, snap.id + 3]
        assert updates[0].data["deltas"] == [{"ts": rfc3339(day_start()), "likes": 2}]
    # The API's errors answer before any stream starts.
    async with sse(srv, {**params, "metrics": "nope"}, srv.keys["acme"].read) as stream:
        assert stream.response.status_code == 400
    async with sse(srv, {**params, "platform": "myspace"}, srv.keys["acme"].read) as stream:
        assert stream.response.status_code == 400
    async with sse(srv, params) as stream:
        assert stream.response.status_code == 401
    async with sse(srv, params, srv.keys["acme"].ingest) as stream:
        assert stream.response.status_code == 403
    async with sse(srv, {**params, "token": srv.keys["acme"].read}) as stream:
        assert (await stream.expect("snapshot")).data["totals"] == {"likes": 10, "comments": 1}


async def test_sse_reconnect_replays_missed_updates(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, **NOW)
    read = srv.keys["acme"].read
    inf = new_id("inf")
    params = {"influencer_id": inf, "metrics": "likes,comments"}
    async with sse(srv, params, read) as stream:
        snap = await stream.expect("snapshot")
        await ingest(srv, [ev(influencer_id=inf, value=1)])
        seen = await stream.expect("update")
        assert seen.id == snap.id + 1
    # Missed while disconnected: three commits, three updates.
    await ingest(srv, [ev(influencer_id=inf, value=2)])
    await ingest(srv, [ev(influencer_id=inf, metric="comments", value=4)])
    await ingest(srv, [ev(influencer_id=inf, value=3)])
    truth = await query_totals(srv, inf, "likes,comments")
    assert truth == {"likes": 6, "comments": 4}

    async with sse(srv, params, read, last_event_id=seen.id) as stream:
        replayed = [await stream.expect("update") for _ in range(3)]
        assert [e.id for e in replayed] == [seen.id + 1, seen.id + 2, seen.id + 3]
        assert [e.data["totals"] for e in replayed] == [
            {"likes": 3, "comments": 0},
            {"likes": 3, "comments": 4},
            truth,
        ]
        assert replayed[1].data["deltas"][0]["comments"] == 4
        # And then live again, numbered on.
        await ingest(srv, [ev(influencer_id=inf, value=1)])
        after = await stream.expect("update")
        assert (after.id, after.data["totals"]) == (seen.id + 4, {"likes": 7, "comments": 4})
        last = after.id

    # Up to date: nothing to replay, the next update follows.
    async with sse(srv, params, read, last_event_id=last) as stream:
        await ingest(srv, [ev(influencer_id=inf, metric="comments", value=1)])
        update = await stream.expect("update")
        assert (update.id, update.data["totals"]) == (last + 1, {"likes": 7, "comments": 5})

    # An id the channel never had (or not a number) gets a fresh snapshot first.
    for unknown in (1, "garbage"):
        async with sse(srv, params, read, last_event_id=unknown) as stream:
            snap = await stream.expect("snapshot")
            assert (snap.id, snap.data["totals"]) == (last + 1, {"likes": 7, "comments": 5})


async def test_sse_reconnect_past_the_replay_window_gets_a_snapshot(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST, **NOW, live_replay_seconds=0)
    read = srv.keys["acme"].read
    inf = new_id("inf")
    params = {"influencer_id": inf, "metrics": "likes"}
    async with sse(srv, params, read) as stream:
        snap = await stream.expect("snapshot")
        for value in (1, 2, 3):
            await ingest(srv, [ev(influencer_id=inf, value=value)])
        updates = [await stream.expect("update") for _ in range(3)]
        assert [u.id for u in updates] == [snap.id + 1, snap.id + 2, snap.id + 3]
    async with sse(srv, params, read, last_event_id=updates[0].id) as stream:
        fresh = await stream.expect("snapshot")
        assert (fresh.id, fresh.data["totals"]) == (updates[-1].id, {"likes": 6})


async def test_sse_subscribers_of_one_channel_share_its_seq(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, **NOW)
    read = srv.keys["acme"].read
    inf = new_id("inf")
    params = {"influencer_id": inf, "metrics": "likes"}
    async with sse(srv, params, read) as one:
        first = await one.expect("snapshot")
        await ingest(srv, [ev(influencer_id=inf, value=1)])
        await one.expect("update")
        async with (
            sse(srv, params, read) as two,
            sse(srv, {**params, "metrics": "likes,comments"}, read) as other,
        ):
            joined = await two.expect("snapshot")
            assert (joined.id, joined.data["totals"]) == (first.id + 1, {"likes": 1})
            await other.expect("snapshot")
            await ingest(srv, [ev(influencer_id=inf, value=2)])
            a, b = await one.expect("update"), await two.expect("update")
            assert a.id == b.id == first.id + 2
            assert a.data == b.data
            assert (await other.expect("update")).data["totals"] == {"likes": 3, "comments": 0}


async def test_sse_heartbeats_are_comments(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, **NOW, live_heartbeat_seconds=0.2)
    inf = new_id("inf")
    async with sse(srv, {"influencer_id": inf, "metrics": "likes"}, srv.keys["acme"].read) as one:
        snap = await one.expect("snapshot")
        await asyncio.sleep(0.7)
        await ingest(srv, [ev(influencer_id=inf, value=2)])
        update = await one.expect("update")
        # Heartbeats are comments: no id, nothing a client would take for an event.
        assert (update.id, update.data["totals"]) == (snap.id + 1, {"likes": 2})
        assert one.comments
        assert set(one.comments) == {": heartbeat"}


# -- 9. backpressure ----------------------------------------------------------------------

SLOW = {"live_queue_messages": 8, "live_coalesce_ms": 0}
BIG_TEXT = "slow reader " * 2500  # ~30 KB: each tailed event is one large message
MAX_BATCHES = 400


def chatty(inf: str, count: int = 4) -> list[dict[str, Any]]:
    """A commit of ``count`` large comments: one message of ~120 KB per tail, and an update.

    A client that reads keeps up (2 messages per commit < the queue of 8); one that does
    not fills its TCP buffers within a few dozen commits.
    """
    return [ev(influencer_id=inf, metric="comments", text=BIG_TEXT) for _ in range(count)]


async def test_a_client_that_never_reads_slows_nobody(make_server: ServerFactory) -> None:
    # Two connections per key: while the slow client is connected, a third is refused.
    srv = make_server(**FAST, **SLOW, live_max_lags=2, live_max_connections=2)
    read = srv.keys["acme"].read
    inf = new_id("inf")
    slow = RawClient(srv, read)
    try:
        slow.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        slow.send({"op": "subscribe", "id": "s", "filter": {"influencer_id": inf}})
        await asyncio.to_thread(
            slow.read_until, lambda got: {m["type"] for m in got} >= {"tailing", "snapshot"}
        )
        # From here on the slow client reads nothing; the normal one reads the same feed.
        async with live(srv, read) as normal:
            await normal.subscribe("n", {"influencer_id": inf}, ["comments"])
            await normal.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
            await normal.expect("tailing", "t")
            batches = 0
            # The normal client reads all along, as a client that keeps up does: its
            # library's queue and TCP buffers alone would fill up much as the slow one's.
            reading = asyncio.create_task(keep_reading(normal))
            try:
                while batches < MAX_BATCHES:
                    body = await ingest(srv, chatty(inf))
                    assert body == {"accepted": 4, "duplicates": 0, "rejected": []}
                    batches += 1
                    if batches % 10 == 0 and await ws_accepted(srv, read):
                        break
                else:
                    raise AssertionError("the slow client was never disconnected")
            finally:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
            expected = {"comments": 4 * batches}
            if not same_numbers(normal.latest("n"), expected):
                await normal.until_totals("n", expected)
            # The normal reader got every commit and every event, and never lagged:
            # one update and one tail message per commit, each with the commit's 4 events.
            await normal.sync()
            updates = [m for m in normal.log if m["type"] == "update"]
            assert [u["totals"]["comments"] for u in updates] == [
                4 * (i + 1) for i in range(batches)
            ]
            tailed = [m for m in normal.log if m["type"] == "event"]
            assert [len(m["events"]) for m in tailed] == [4] * batches
            assert len({e["event_id"] for m in tailed for e in m["events"]}) == 4 * batches
            assert not [m for m in normal.log if m["type"] == "lagged"]
            seqs = [m["seq"] for m in normal.log]
            assert seqs == list(range(1, len(seqs) + 1))
        await asyncio.to_thread(slow.drain)
    finally:
        slow.close()
    tailed = [m for m in slow.messages if m["type"] == "event"]
    # The server dropped what the client could not take, and then let it go.
    assert len(tailed) < batches
    assert sum(len(m["events"]) for m in tailed) < 4 * batches
    assert slow.eof or slow.close_code == 1013, (len(slow.messages), slow.close_code)
    assert slow.close_code in (None, 1013)
    seqs = [m["seq"] for m in slow.messages]
    assert seqs == sorted(set(seqs))


async def test_a_stuck_client_does_not_keep_the_server_busy(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, **SLOW, live_heartbeat_seconds=0.2, live_max_lags=1000)
    read = srv.keys["acme"].read
    inf = new_id("inf")
    assert srv._thread.ident is not None
    server_cpu = time.pthread_getcpuclockid(srv._thread.ident)
    stuck = RawClient(srv, read)
    try:
        stuck.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        await asyncio.to_thread(
            stuck.read_until, lambda got: [m["type"] for m in got] == ["tailing"]
        )
        # ~7 MB for a client that reads nothing: its TCP buffers fill, its writer blocks,
        # its outbox overflows (lagged), and what is queued after that stays queued.
        for _ in range(60):
            await ingest(srv, chatty(inf))
        await asyncio.sleep(0.5)
        before = time.clock_gettime(server_cpu)
        await asyncio.sleep(2.0)
        busy = time.clock_gettime(server_cpu) - before
        # (Reading now shows that the outbox did overflow: the writer was blocked.)
        with contextlib.suppress(TimeoutError):
            await asyncio.to_thread(
                stuck.read_until, lambda got: any(m["type"] == "lagged" for m in got)
            )
        assert [m for m in stuck.messages if m["type"] == "lagged"], "the writer never blocked"
        # Nothing to do but wait for the client: the server's thread idles.
        assert busy < 0.5, f"{busy:.2f} s of CPU in 2 s"
    finally:
        stuck.close()


async def keep_reading(ws: Live) -> None:
    """Read (into ``ws.log``) every message until cancelled; a quiet spell is no error."""
    while True:
        with contextlib.suppress(TimeoutError):
            await ws.recv()


async def ws_accepted(srv: LiveServer, key: str) -> bool:
    """Whether a new WebSocket of ``key`` is accepted, or refused for the connection limit."""
    async with live(srv, key) as probe:
        with contextlib.suppress(ConnectionClosed):  # refused: the error is queued already
            await probe.send({"op": "ping"})
        first = await probe.recv()
    if first["type"] == "pong":
        return True
    assert first["code"] == "rate_limited", first
    return False


@pytest.mark.skipif(
    cluster.CLUSTER,
    reason="one request is one commit only on the embedded store: the cluster's workers may "
    "commit its events in several, read between by a client that then never falls behind",
)
async def test_a_lagging_client_gets_lagged_then_fresh_snapshots(
    make_server: ServerFactory,
) -> None:
    """One commit seen by 20 tails (20 messages at once) overflows an outbox of 8, whoever
    the reader is: a commit is one message per tail, so it takes many tails to overflow."""
    srv = make_server(**FAST, **SLOW, live_max_lags=1000)
    inf = new_id("inf")
    tails = [f"t{i}" for i in range(20)]
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.subscribe("s", {"influencer_id": inf}, ["comments"])
        for tail_id in tails:
            await ws.send({"op": "tail", "id": tail_id, "filter": {"influencer_id": inf}})
            await ws.expect("tailing", tail_id)
        start = len(ws.log)
        batch = [ev(influencer_id=inf, metric="comments") for _ in range(20)]
        await ingest(srv, batch)
        await ws.sync()
        messages = ws.log[:-1]
        seqs = [m["seq"] for m in messages]
        assert seqs == sorted(set(seqs)), seqs
        lags = [i for i, m in enumerate(messages) if m["type"] == "lagged"]
        assert lags, [m["type"] for m in messages[start:]]
        last = lags[-1]
        lagged = messages[last]
        assert lagged["dropped"] >= 1
        # The seq gap before `lagged` is at least what it says was dropped.
        assert lagged["seq"] - messages[last - 1]["seq"] - 1 >= lagged["dropped"]
        # Right after it, a fresh snapshot of the subscription, then everything in order.
        assert (messages[last + 1]["type"], messages[last + 1]["id"]) == ("snapshot", "s")
        tail = messages[last:]
        assert [m["seq"] for m in tail] == list(range(lagged["seq"], lagged["seq"] + len(tail)))
        states = [m for m in tail if m.get("id") == "s" and m["type"] in ("snapshot", "update")]
        assert states[-1]["totals"] == {"comments": 20}
        # Some tails' messages were dropped; a message that arrived holds the whole commit.
        events = [m for m in messages[start:] if m["type"] == "event"]
        assert len(events) < len(tails)
        assert len({m["id"] for m in events}) == len(events)
        ids = [e["event_id"] for e in batch]
        for message in events:
            assert [e["event_id"] for e in message["events"]] == ids

        # Caught up and down to one tail, the connection carries on: no lag for a commit.
        for tail_id in tails[1:]:
            await ws.send({"op": "unsubscribe", "id": tail_id})
            await ws.expect("unsubscribed", tail_id)
        start = len(ws.log)
        await ingest(srv, [ev(influencer_id=inf, metric="comments") for _ in range(2)])
        updates = await ws.until_totals("s", {"comments": 22})
        assert len(updates) == 1
        await ws.sync()
        after = ws.log[start - 1 :]
        assert sorted(m["type"] for m in after[1:]) == ["event", "pong", "update"]
        assert [m["seq"] for m in after] == list(range(after[0]["seq"], after[0]["seq"] + 4))
        (message,) = [m for m in after if m["type"] == "event"]
        assert (message["id"], len(message["events"])) == ("t0", 2)


async def test_a_fast_reader_survives_one_large_commit(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)  # default queue (256) and live_max_lags (3)
    inf = new_id("inf")
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        await ws.expect("tailing", "t")
        # 1,000 events in one request, well under max_events_per_request (10,000).
        batch = [ev(influencer_id=inf, metric="comments") for _ in range(1000)]
        await ingest(srv, batch)
        try:
            await ws.expect("event", "t")
            await ws.sync()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            raise AssertionError(f"a client that reads was closed with {code}") from None
        # One commit, one message with every event, nothing lagged or dropped.
        assert [m["type"] for m in ws.log] == ["tailing", "event", "pong"]
        assert [m["seq"] for m in ws.log] == [1, 2, 3]
        assert [e["event_id"] for e in ws.log[1]["events"]] == [e["event_id"] for e in batch]
        # And the connection carries on.
        await ingest(srv, [ev(influencer_id=inf, metric="comments", text="after")])
        after = await ws.expect("event", "t")
        assert [e["text"] for e in after["events"]] == ["after"]


# -- 10. limits ---------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Retry ``check`` until it holds (a closed connection frees its slot soon, not at once)."""
    async with asyncio.timeout(TIMEOUT):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.05)


async def sse_accepted(srv: LiveServer, params: dict[str, str], key: str) -> bool:
    """Whether an SSE stream of ``key`` is accepted, or refused for the connection limit."""
    async with sse(srv, params, key) as stream:
        if stream.response.status_code == 200:
            await stream.expect("snapshot")
            return True
        assert stream.response.status_code == 429
        return False


async def test_live_connections_per_key_are_limited(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, live_max_connections=2)
    acme, globex = srv.keys["acme"], srv.keys["globex"]
    params = {"influencer_id": new_id("inf"), "metrics": "likes"}
    issued = await issue_token(srv, {"influencer_id": params["influencer_id"]}, acme.read)
    async with live(srv, acme.read) as one:
        assert await one.sync() == []
        async with live(srv, acme.read) as two:
            assert await two.sync() == []
            assert await refused(srv, acme.read) == "rate_limited"
            # Stream tokens count against the key that asked for them.
            assert await refused(srv, token=issued["token"]) == "rate_limited"
            async with sse(srv, params, acme.read) as stream:
                assert stream.response.status_code == 429
                error = json.loads(await stream.response.aread())["error"]
                assert error["code"] == "rate_limited"
                assert "retry-after" in stream.response.headers
            # Another key, another count.
            async with live(srv, globex.read) as other:
                assert await other.sync() == []
            # Both connections still work.
            await one.subscribe("a", {"influencer_id": params["influencer_id"]}, ["likes"])
        # A closed WebSocket frees its slot: an SSE stream fits again ...
        await eventually(lambda: sse_accepted(srv, params, acme.read))
        async with sse(srv, params, acme.read) as stream:
            await stream.expect("snapshot")
            assert await refused(srv, acme.read) == "rate_limited"
        # ... and so does a finished SSE stream.
        await eventually(lambda: ws_accepted(srv, acme.read))


async def test_subscriptions_per_connection_are_limited(make_server: ServerFactory) -> None:
    srv = make_server(**FAST, live_max_subscriptions=2)
    inf = new_id("inf")
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.subscribe("a", {"influencer_id": inf}, ["likes"])
        await ws.send({"op": "tail", "id": "b", "filter": {"influencer_id": inf}})
        await ws.expect("tailing", "b")
        error = await ws.error({"op": "subscribe", "id": "c", "filter": {"influencer_id": inf}})
        assert (error["code"], error["id"]) == ("rate_limited", "c")
        error = await ws.error({"op": "tail", "id": "d", "filter": {"influencer_id": inf}})
        assert (error["code"], error["id"]) == ("rate_limited", "d")
        await ws.send({"op": "unsubscribe", "id": "a"})
        assert (await ws.recv())["type"] == "unsubscribed"
        snap = await ws.subscribe("c", {"influencer_id": inf}, ["likes", "comments"])
        assert snap["totals"] == {"likes": 0, "comments": 0}
        await ingest(srv, [ev(influencer_id=inf, value=3)])
        await ws.until_totals("c", {"likes": 3, "comments": 0})
    # The limit is per connection: a new one starts afresh.
    async with live(srv, srv.keys["acme"].read) as ws:
        await ws.subscribe("a", {"influencer_id": inf}, ["likes"])
        await ws.subscribe("b", {"influencer_id": inf}, ["comments"])
