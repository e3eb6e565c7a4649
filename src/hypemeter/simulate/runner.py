"""Sends a Workload's events to a running server through the public HTTP API."""

from __future__ import annotations

import asyncio
import gzip
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hypemeter.simulate.workload import US, Workload

TICK_SECONDS = 0.25


@dataclass(slots=True)
class Tally:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    throttled: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, reply: dict[str, Any]) -> None:
        self.accepted += int(reply.get("accepted", 0))
        self.duplicates += int(reply.get("duplicates", 0))
        self.rejected += len(reply.get("rejected", []))


def ndjson(events: list[dict[str, Any]]) -> bytes:
    encode = msgspec.json.encode
    return b"\n".join(encode(e) for e in events) + b"\n"


async def post_batch(
    client: httpx.AsyncClient, events: list[dict[str, Any]], tally: Tally, *, attempts: int = 5
) -> None:
    """POST one gzip NDJSON batch, honouring Retry-After on 429 and 503."""
    body = gzip.compress(ndjson(events), compresslevel=1)
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    tally.sent += len(events)
    for _ in range(attempts):
        try:
            response = await client.post("/v1/events", content=body, headers=headers)
        except httpx.TransportError as exc:
            tally.failures += 1
            tally.errors.append(str(exc))
            await asyncio.sleep(1.0)
            continue
        if response.status_code in (429, 503):
            tally.throttled += 1
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        if response.status_code in (200, 400):
            tally.add(response.json())
            return
        tally.failures += 1
        tally.errors.append(f"{response.status_code}: {response.text[:200]}")
        return


async def track_click(client: httpx.AsyncClient, event: dict[str, Any], tally: Tally) -> None:
    """Send one click the way an in-app SDK does: POST /v1/track/click."""
    body = {k: v for k, v in event.items() if k != "metric"}
    body["event_id"] = f"{event['event_id']}-sdk"
    tally.sent += 1
    response = await client.post("/v1/track/click", json=body)
    if response.status_code == 200:
        tally.add(response.json())
    else:
        tally.failures += 1


async def simulate(
    url: str,
    key: str,
    *,
    rate: float,
    influencers: int,
    duration: float,
    seed: int,
    show_progress: bool = True,
    origin_us: int | None = None,
) -> Tally:
    """Send about ``rate`` events per second for ``duration`` seconds (0 = until cancelled)."""
    now_us = time.time_ns() // 1000
    workload = Workload(
        seed=seed,
        influencers=influencers,
        content_items=max(influencers * 20, 100),
        start_us=now_us - 6 * 86400 * US,
        span_us=7 * 86400 * US,
        id_prefix=f"sim{seed}-{now_us}",
        origin_us=origin_us,
    )
    tally = Tally()
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30.0) as client:
        with Progress(
            TextColumn("[bold]simulating[/]"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} events sent"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            disable=not show_progress,
        ) as progress:
            total = rate * duration if duration > 0 else None
            task = progress.add_task("send", total=total, status="")
            await _loop(
                client,
                workload,
                tally,
                rate,
                duration,
                lambda: progress.update(
                    task,
                    completed=tally.sent,
                    status=f"accepted {tally.accepted:,} dup {tally.duplicates:,} "
                    f"rejected {tally.rejected:,} throttled {tally.throttled:,}",
                ),
            )
    return tally


async def _loop(
    client: httpx.AsyncClient,
    workload: Workload,
    tally: Tally,
    rate: float,
    duration: float,
    refresh: Any,
) -> None:
    started = time.monotonic()
    ticks = 0
    carry = 0.0
    while duration <= 0 or time.monotonic() - started < duration:
        carry += rate * TICK_SECONDS
        count = int(carry)
        carry -= count
        if count:
            now_us = time.time_ns() // 1000
            events = workload.events(count, start_us=now_us - 200_000, end_us=now_us)
            clicks = [e for e in events[:2] if e.get("metric") == "clicks"]
            await post_batch(client, events, tally)
            for click in clicks[:1]:
                await track_click(client, click, tally)
        refresh()
        ticks += 1
        delay = started + ticks * TICK_SECONDS - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def backfill(
    url: str,
    key: str,
    *,
    days: int,
    events: int,
    last_hour_events: int,
    influencers: int,
    seed: int,
    origin_us: int,
    batch: int = 5000,
    show_progress: bool = True,
) -> Tally:
    """Send ``events`` events spread over the last ``days`` days but the last hour, then
    ``last_hour_events`` over the last hour (as dense as the live traffic that follows),
    oldest first.

    Event ids depend only on ``seed``: a backfill that is run again after an interruption
    sends the same ids, which the server counts once.
    """
    now_us = time.time_ns() // 1000
    hour_us = 3600 * US
    span_us = days * 86400 * US
    workload = Workload(
        seed=seed,
        influencers=influencers,
        content_items=max(influencers * 20, 100),
        start_us=now_us - span_us,
        span_us=span_us,
        id_prefix=f"history{seed}",
        origin_us=origin_us,
    )
    windows: list[tuple[int, int, int]] = []  # (start, end, events)
    for start, end, count in (
        (now_us - span_us, now_us - hour_us, events),
        (now_us - hour_us, now_us, last_hour_events),
    ):
        parts = max(1, -(-count // batch)) if count > 0 else 0
        step = (end - start) // max(parts, 1)
        windows += [
            (start + n * step, start + (n + 1) * step, count // parts) for n in range(parts)
        ]
    tally = Tally()
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=60.0) as client:
        with Progress(
            TextColumn("[bold]seeding {task.fields[days]} days of history[/]"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} events"),
            TimeElapsedColumn(),
            disable=not show_progress,
        ) as progress:
            task = progress.add_task("seed", total=sum(w[2] for w in windows), days=days)
            for start, end, count in windows:
                await post_batch(client, workload.events(count, start_us=start, end_us=end), tally)
                progress.update(task, completed=tally.sent)
    return tally
