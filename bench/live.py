"""B2 (freshness) and B4 (fan-out) of PERF.md: live push over WebSockets.

B2: a background client ingests the seeded workload at 20,000 events/s; a probe
posts one event at a time for an influencer it watches over a WebSocket and
times each from the start of its ingest request to the receipt of the update
carrying it (the update's total must count it).

B4: 5,000 WebSocket subscribers (5 per influencer, 1,000 influencers) run in
their own process while the workload is ingested at 2,000 events/s. Each
update's delivery time is its receipt minus the commit time the server stamps
on it (``committed_at``; one machine, one clock). Reported: delivery p50/p99,
messages delivered per second, and the server's CPU and peak RSS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import tempfile
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import uvloop
import websockets

from bench.cluster import Cluster
from bench.httpclient import Connection, build_request
from bench.loadgen import LoadJob, run_load
from bench.queries import _Store
from bench.report import Figure
from bench.server import HOST, cpu_seconds, server_env
from bench.stats import percentile
from bench.workload import INFLUENCERS, Pool

B2_RATE = 20_000.0
B2_CLUSTER_RATE = 5_000.0
B2_PROBES_S = 12.0
B2_PROBE_EVERY_S = 0.25  # above the 100 ms coalescing: each probe's update goes out at once
B4_SUBSCRIBERS = 5_000
B4_RATE = 2_000.0
B4_SECONDS = 20.0
METRICS = ["likes", "comments", "shares", "views"]
WEEK_AGO = 8 * 86400  # the workload's events span the last 7 days

decode = msgspec.json.Decoder().decode


def _since() -> str:
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=WEEK_AGO)
    return moment.strftime("%Y-%m-%dT00:00:00Z")


def _store(cluster: bool = False, **settings: str) -> _Store:
    env = server_env()
    env.update({f"HYPEMETER_{k.upper()}": v for k, v in settings.items()})
    topology = Cluster() if cluster else None
    if topology is not None:
        env.update(topology.env())
    store = _Store(Path(tempfile.mkdtemp(prefix="hypemeter-bench-live-")), env, topology)
    store.provision()
    store.launch()
    return store


def _remove(store: _Store) -> None:
    store.remove()


def _background(store: _Store, pool: Pool, rate: float, seconds: float, tag: str) -> LoadJob:
    assert store.process is not None
    return LoadJob(
        kind="batch",
        port=store.port,
        key=store.ingest_key,
        server_pid=store.process.pid,
        pool=pool.path,
        prefix=f"{tag}{time.time_ns():x}",
        connections=4,
        duration_s=seconds,
        max_requests=int(rate * seconds / 500) + 10,
        batch_events=500,
        rate_events_per_s=rate,
    )


# -- B2 ------------------------------------------------------------------------------------


async def _probe(
    port: int, read_key: str, ingest_key: str, seconds: float
) -> tuple[list[float], list[float]]:
    """Latencies (s) from each probe's ingest request start to the update counting it,
    and to the ingest acknowledgement."""
    influencer = f"probe-{uuid.uuid4().hex[:8]}"
    url = f"ws://{HOST}:{port}/v1/stream?token={read_key}"
    latencies: list[float] = []
    acks: list[float] = []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(
            msgspec.json.encode(
                {
                    "op": "subscribe",
                    "id": "p",
                    "filter": {"influencer_id": influencer},
                    "metrics": ["likes"],
                }
            )
        )
        first = decode(await ws.recv())
        assert first["type"] == "snapshot", first
        http = await Connection.open(HOST, port)
        headers = {"Authorization": f"Bearer {ingest_key}", "Content-Type": "application/json"}
        deadline = time.perf_counter() + seconds
        sent = 0
        while time.perf_counter() < deadline:
            tick = time.perf_counter()
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body = msgspec.json.encode(
                [{"event_id": uuid.uuid4().hex, "influencer_id": influencer,
                  "platform": "instagram", "metric": "likes", "value": 1, "ts": now}]
            )  # fmt: skip
            request = build_request("POST", "/v1/events", f"{HOST}:{port}", headers, body)
            started = time.perf_counter()
            status, reply = await http.request(request)
            acks.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"probe ingest failed: {status} {reply[:200]!r}")
            sent += 1
            while True:
                message = decode(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "update" and message["totals"]["likes"] >= sent:
                    latencies.append(time.perf_counter() - started)
                    break
            await asyncio.sleep(max(0.0, tick + B2_PROBE_EVERY_S - time.perf_counter()))
        http.close()
    return latencies, acks


def run_b2(
    executor: Executor, pool: Pool, runs: int, say: Any, *, cluster: bool = False
) -> tuple[list[Figure], dict[str, Any]]:
    """B2; on the cluster topology as ``B2-cluster`` (through the log, a worker and Redis)."""
    store = _store(cluster)
    bench = "B2-cluster" if cluster else "B2"
    # The cluster's workers commit about 20k events/s on this machine beside everything
    # else: at 20k the backlog would grow without end, so its background load is lower.
    rate = B2_CLUSTER_RATE if cluster else B2_RATE
    around = f"{rate / 1000:g}k events/s around"
    notes: dict[str, Any] = {}
    try:
        seconds = runs * (B2_PROBES_S + 2) + 6
        load = executor.submit(run_load, _background(store, pool, rate, seconds, "b2"))
        time.sleep(4)  # the background load reaches its pace
        p50: list[float] = []
        p99: list[float] = []
        ack50: list[float] = []
        for _ in range(runs):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                found, acks = runner.run(
                    _probe(store.port, store.read_key, store.ingest_key, B2_PROBES_S)
                )
            p50.append(percentile(found, 0.50) * 1000)
            p99.append(percentile(found, 0.99) * 1000)
            ack50.append(percentile(acks, 0.50) * 1000)
            say(
                f"  {bench}: {len(found)} probes, p50 {p50[-1]:.1f} ms, p99 {p99[-1]:.1f} ms "
                f"(ingest acknowledged: p50 {ack50[-1]:.1f} ms, "
                f"p99 {percentile(acks, 0.99) * 1000:.1f} ms)"
            )
        background = load.result()
        achieved = background.acked / background.wall_s
        notes = {"background_events_per_s": round(achieved), "background_errors": background.errors}
        say(f"  {bench} background load: {achieved:,.0f} events/s acknowledged")
    finally:
        _remove(store)
    return [
        Figure.of_runs(bench, "ingest_to_update_p50_ms", p50, "<= 20", around),
        Figure.of_runs(bench, "ingest_to_update_p99_ms", p99, "<= 100", around),
        Figure.of_runs(bench, "probe_ingest_ack_p50_ms", ack50),
        Figure.of_runs(bench, "background_events_per_s", [achieved]),
    ], notes


# -- B4 ------------------------------------------------------------------------------------


@dataclass(slots=True)
class FanOut:
    subscribers: int = 0
    messages: int = 0
    delays: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_s: float = 0.0


def _epoch(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


async def _subscribers(port: int, key: str, ready: Any, go: Any, seconds: float) -> FanOut:
    result = FanOut()
    since = _since()
    url = f"ws://{HOST}:{port}/v1/stream?token={key}"

    async def one(index: int) -> websockets.ClientConnection:
        ws = await websockets.connect(url, max_size=None, ping_interval=None)
        influencer = f"inf-{index % INFLUENCERS:04d}"
        await ws.send(
            msgspec.json.encode(
                {
                    "op": "subscribe",
                    "id": "s",
                    "filter": {"influencer_id": influencer},
                    "metrics": METRICS,
                    "since": since,
                }
            )
        )
        snapshot = decode(await ws.recv())
        if snapshot["type"] != "snapshot":
            raise RuntimeError(f"subscribe failed: {snapshot}")
        return ws

    sockets: list[websockets.ClientConnection] = []
    for first in range(0, B4_SUBSCRIBERS, 250):  # open them in waves
        sockets += await asyncio.gather(*(one(i) for i in range(first, first + 250)))
    result.subscribers = len(sockets)
    ready.set()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    started, cpu = time.perf_counter(), time.process_time()

    async def read(ws: websockets.ClientConnection) -> None:
        try:
            while True:
                raw = await ws.recv()
                received = time.time()
                message = decode(raw)
                if message["type"] == "update":
                    result.messages += 1
                    result.delays.append(received - _epoch(message["committed_at"]))
                elif message["type"] not in {"heartbeat", "snapshot"} and len(result.errors) < 5:
                    result.errors.append(str(message)[:200])
        except websockets.ConnectionClosed as exc:
            if len(result.errors) < 5:
                result.errors.append(f"closed: {exc}")

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    await asyncio.sleep(seconds)
    result.seconds = time.perf_counter() - started
    result.cpu_s = time.process_time() - cpu
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return result


def _subscriber_process(port: int, key: str, ready: Any, go: Any, seconds: float, out: Any) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out.put(runner.run(_subscribers(port, key, ready, go, seconds)))


def run_b4(
    executor: Executor, pool: Pool, runs: int, say: Any
) -> tuple[list[Figure], dict[str, Any]]:
    p50: list[float] = []
    p99: list[float] = []
    rates: list[float] = []
    cpu: list[float] = []
    rss: list[float] = []
    notes: dict[str, Any] = {}
    context = multiprocessing.get_context("spawn")
    for run in range(runs):
        store = _store(live_max_connections=str(B4_SUBSCRIBERS * 2))
        try:
            assert store.process is not None
            ready, go, out = context.Event(), context.Event(), context.Queue()
            subscribers = context.Process(
                target=_subscriber_process,
                args=(store.port, store.read_key, ready, go, B4_SECONDS + 2, out),
            )
            subscribers.start()
            if not ready.wait(180):
                raise RuntimeError("the B4 subscribers did not connect within 180 s")
            pid = store.process.pid
            cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
            go.set()
            load = executor.submit(run_load, _background(store, pool, B4_RATE, B4_SECONDS, "b4"))
            background = load.result()
            fan: FanOut = out.get(timeout=120)
            subscribers.join(30)
            cpu.append((cpu_seconds(pid) - cpu_before) / (time.perf_counter() - wall_before))
            rss.append(store.peak_rss_mb())
            p50.append(percentile(fan.delays, 0.50) * 1000)
            p99.append(percentile(fan.delays, 0.99) * 1000)
            rates.append(fan.messages / fan.seconds)
            notes[f"run{run}"] = {
                "subscribers": fan.subscribers,
                "client_cpu_cores": round(fan.cpu_s / fan.seconds, 2),
                "updates": fan.messages,
                "ingested_events_per_s": round(background.acked / background.wall_s),
                "errors": fan.errors + background.errors,
            }
            say(
                f"  B4: {fan.subscribers} subscribers, {rates[-1]:,.0f} updates/s, "
                f"p50 {p50[-1]:.0f} ms, p99 {p99[-1]:.0f} ms, server CPU {cpu[-1]:.2f} cores, "
                f"RSS {rss[-1]:.0f} MB, client CPU {fan.cpu_s / fan.seconds:.2f} cores"
            )
        finally:
            _remove(store)
    return [
        Figure.of_runs("B4", "delivery_p50_ms", p50),
        Figure.of_runs("B4", "delivery_p99_ms", p99, "<= 250", "5,000 subscribers, 2k events/s"),
        Figure.of_runs("B4", "updates_delivered_per_s", rates),
        Figure.of_runs("B4", "server_cpu_cores", cpu),
        Figure.of_runs("B4", "server_peak_rss_mb", rss),
    ], notes
