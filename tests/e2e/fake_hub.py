"""A fake WebSub hub: takes subscription requests and verifies intent like a real hub.

On ``POST /subscribe`` it answers 202, then calls the subscriber's callback with
``hub.mode``, ``hub.topic``, ``hub.challenge`` and ``hub.lease_seconds`` and records
whether the callback echoed the challenge exactly (real HTTP on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Subscription:
    at: float
    callback: str
    topic: str
    lease_seconds: int
    secret: str
    verified: bool | None = None  # None until the hub called back


class FakeHub:
    def __init__(self, *, grant_lease: int | None = None, status: int = 202) -> None:
        self.requests: list[Subscription] = []
        self.grant_lease = grant_lease
        self.status = status
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/subscribe", self._subscribe, methods=["POST"])])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/subscribe"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],), daemon=True)

    def start(self) -> FakeHub:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def seen(self) -> list[Subscription]:
        with self._lock:
            return list(self.requests)

    async def _subscribe(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        sub = Subscription(
            time.monotonic(),
            form["hub.callback"],
            form["hub.topic"],
            int(form["hub.lease_seconds"]),
            form["hub.secret"],
        )
        with self._lock:
            self.requests.append(sub)
        if self.status == 202:
            asyncio.get_running_loop().create_task(self._verify(sub))
        return Response(status_code=self.status)

    async def _verify(self, sub: Subscription) -> None:
        challenge = secrets.token_hex(8)
        lease = self.grant_lease or sub.lease_seconds
        params = {
            "hub.mode": "subscribe",
            "hub.topic": sub.topic,
            "hub.challenge": challenge,
            "hub.lease_seconds": str(lease),
        }
        async with httpx.AsyncClient() as client:
            answer = await client.get(sub.callback, params=params)
        with self._lock:
            sub.verified = answer.status_code == 200 and answer.text == challenge
