"""``hypemeter demo``: a server with a demo tenant, its keys and live simulated traffic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random

from hypemeter.auth.model import parse_scopes
from hypemeter.control import offline_auth
from hypemeter.errors import Unauthenticated
from hypemeter.settings import Settings

DEMO_TENANT = "demo"
DEMO_SCOPES = {"read": "read", "ingest": "ingest", "admin": "ingest,read,admin"}


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
    settings.data.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(keys, handle)
    return keys


async def _serve_with_traffic(settings: Settings, rate: float) -> None:
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
    url = f"http://{settings.host}:{settings.port}"
    print(
        f"\nHypemeter demo is running at {url}\n"
        f"  API docs:   {url}/docs\n"
        f"  read key:   {keys['read']}\n"
        f"  ingest key: {keys['ingest']}\n"
        f"  admin key:  {keys['admin']}\n"
        f"  try: curl -H 'Authorization: Bearer {keys['admin']}' {url}/metrics\n"
        f"Simulating {rate:g} events/s. Ctrl-C stops everything.\n",
        flush=True,
    )
    traffic = asyncio.create_task(
        simulate(
            url,
            keys["ingest"],
            rate=rate,
            influencers=50,
            duration=0,
            seed=random.SystemRandom().randrange(1 << 30),
            show_progress=False,
        )
    )
    try:
        await serving
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic


def run_demo(settings: Settings, *, rate: float) -> None:
    from hypemeter.logs import configure_logging
    from hypemeter.serving import prepare_process

    configure_logging("warning")
    prepare_process()
    asyncio.run(_serve_with_traffic(settings, rate))
