"""``hypemeter demo``: a server with a demo tenant, its keys and live simulated traffic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from hypemeter.auth.model import parse_scopes
from hypemeter.control import offline_auth
from hypemeter.datadir import private_data_dir, write_private
from hypemeter.errors import Unauthenticated
from hypemeter.settings import Settings

DEMO_TENANT = "demo"
DEMO_SCOPES = {"read": "read", "ingest": "ingest", "admin": "ingest,read,admin"}
# The same seed for the history and the live traffic: the same influencers, platforms and
# follower counts carry on from one to the other.
DEMO_SEED = 7
DEMO_INFLUENCERS = 50
HISTORY_DAYS = 7
DAY_US = 86_400_000_000
SEEDED_MARK = "demo-seeded.json"


async def ensure_demo_keys(settings: Settings) -> dict[str, str]:
    """The demo tenant's keys, kept in the data directory so a rerun reuses them."""
    path = settings.data / "demo-keys.json"
    saved: dict[str, str] = {}
    if path.exists():
        saved = json.loads(path.read_text())
    async with offline_auth(settings) as auth:
        await auth.ensure_tenant(DEMO_TENANT)
        keys: dict[str, str] = {}
        for role, scopes in DEMO_SCOPES.items():
            secret = saved.get(role, "")
            with contextlib.suppress(Unauthenticated):
                if auth.authenticate(secret).tenant_id == DEMO_TENANT:
                    keys[role] = secret
                    continue
            new = await auth.create_key(DEMO_TENANT, parse_scopes(scopes), name=f"demo-{role}")
            keys[role] = new.secret
    private_data_dir(settings.data)
    write_private(path, json.dumps(keys))
    return keys


async def _seed(
    settings: Settings,
    url: str,
    key: str,
    serving: asyncio.Task[None],
    rate: float,
    history: int,
) -> int | None:
    """Seed the week of history once; answers when follower counts start (kept in the data
    directory so that later runs carry on from the same accounts), or None when the server
    stopped first."""
    from hypemeter.simulate.runner import backfill

    mark = settings.data / SEEDED_MARK
    state = json.loads(mark.read_text()) if mark.exists() else {}
    origin_us = int(state.get("origin_us") or time.time_ns() // 1000 - HISTORY_DAYS * DAY_US)
    if state.get("done"):
        return origin_us
    write_private(mark, json.dumps({"origin_us": origin_us, "done": False}))
    seeding = asyncio.create_task(
        backfill(
            url,
            key,
            days=HISTORY_DAYS,
            events=history,
            last_hour_events=min(int(rate * 3600), history),
            influencers=DEMO_INFLUENCERS,
            seed=DEMO_SEED,
            origin_us=origin_us,
        )
    )
    # Ctrl-C stops the server: the seeding stops with it, and a rerun sends it again.
    await asyncio.wait({serving, seeding}, return_when=asyncio.FIRST_COMPLETED)
    if not seeding.done():
        seeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await seeding
        return None
    tally = seeding.result()
    if tally.failures:
        raise RuntimeError(f"seeding the demo failed: {'; '.join(tally.errors[:3])}")
    done = {"origin_us": origin_us, "done": True, "accepted": tally.accepted}
    write_private(mark, json.dumps(done))
    return origin_us


async def _serve_with_traffic(settings: Settings, rate: float, history: int) -> None:
    from hypemeter.serving import make_server
    from hypemeter.simulate.runner import simulate

    keys = await ensure_demo_keys(settings)
    server = make_server(settings, graceful_seconds=5)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.05)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}"
    traffic: asyncio.Task[object] | None = None
    try:
        origin_us = await _seed(settings, url, keys["ingest"], serving, rate, history)
        if origin_us is None:
            return  # stopped while seeding
        print(
            f"\nHypemeter demo is running. Open the dashboard (signs in with the read key):\n"
            f"  {url}/#key={keys['read']}\n\n"
            f"  API docs:   {url}/docs\n"
            f"  read key:   {keys['read']}\n"
            f"  ingest key: {keys['ingest']}\n"
            f"  admin key:  {keys['admin']}\n"
            f"  try: curl -H 'Authorization: Bearer {keys['read']}' "
            f"'{url}/v1/leaderboard?metric=engagement&period=24h'\n"
            f"Simulating {rate:g} events/s. Ctrl-C stops everything.\n",
            flush=True,
        )
        traffic = asyncio.create_task(
            simulate(
                url,
                keys["ingest"],
                rate=rate,
                influencers=DEMO_INFLUENCERS,
                duration=0,
                seed=DEMO_SEED,
                show_progress=False,
                origin_us=origin_us,
            )
        )
        await serving
    finally:
        if traffic is not None:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
        if not serving.done():
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await serving


def run_demo(settings: Settings, *, rate: float, history: int) -> None:
    from hypemeter.logs import configure_logging
    from hypemeter.serving import prepare_process

    configure_logging("warning")
    prepare_process()
    asyncio.run(_serve_with_traffic(settings, rate, history))
