"""Fake platform APIs for the pollers: real HTTP on 127.0.0.1, the platforms' formats.

One server answers Instagram media insights, YouTube videos.list and
channels.list, TikTok video query and X tweets lookup, with counters the test
sets (and may lower). Each platform enforces a limit per token over a sliding
window, as the platform would: a call over it is answered 429 and recorded in
``violations`` (tests assert there are none). Tests can script answers ahead of
the real ones (a 503, a 429 with Retry-After, or a real answer with extra headers
such as ``x-rate-limit-remaining: 0``), hold calls on their way in (a slow network:
the platform counts a call when it arrives) and read every call made, with the
content or channel ids it asked for and where its credential travelled (a header,
or the query string, which platforms accept but proxies and logs keep).

It also refreshes tokens as Instagram (``GET /refresh_access_token``) and TikTok
(``POST /v2/oauth/token/``) do, issuing the tokens a test names in ``issue`` (or
made-up ones), and records each refresh; ``refusals`` scripts refused refreshes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Limit:
    calls: int
    window_s: float


@dataclass
class Scripted:
    """A scripted answer; with ``real=True`` the call is answered as usual (counters,
    status 200) and ``headers`` are set over the real answer's headers."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    real: bool = False


@dataclass
class CallRecord:
    at: float
    platform: str
    token: str
    path: str
    status: int
    ids: tuple[str, ...] = ()  # the content (or channel) ids the call asked for
    wall: float = 0.0  # time.time() when it arrived (rate-limit resets are unix times)
    scripted: bool = False  # answered (or given headers) by a scripted answer
    credential_in: str = "header"  # "header", "query" or "none"
    query: str = ""  # the raw query string


@dataclass
class Refresh:
    """One token refresh as the platform saw it."""

    platform: str
    token: str  # the access token (Instagram) or refresh token (TikTok) presented
    status: int
    issued: str | None = None  # the new access token, when refreshed
    form: dict[str, str] = field(default_factory=dict)  # TikTok's form fields
    query: str = ""


class FakePlatforms:
    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], dict[str, int]] = {}
        self.limits: dict[str, Limit] = {
            "instagram": Limit(200, 3600),
            "youtube": Limit(100, 100),
            "tiktok": Limit(600, 60),
            "x": Limit(300, 900),
        }
        self.scripts: dict[str, deque[Scripted]] = defaultdict(deque)
        self.delays: dict[str, deque[float]] = defaultdict(deque)
        self.calls: list[CallRecord] = []
        self.violations: list[CallRecord] = []
        self.refreshes: list[Refresh] = []
        self.issue: dict[str, deque[str]] = defaultdict(deque)  # platform -> tokens to issue
        self.refusals: dict[str, deque[Scripted]] = defaultdict(deque)
        self._windows: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._extra: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/youtube/v3/videos", self._youtube_videos),
                Route("/youtube/v3/channels", self._youtube_channels),
                Route("/v2/video/query/", self._tiktok, methods=["POST"]),
                Route("/v2/oauth/token/", self._tiktok_token, methods=["POST"]),
                Route("/refresh_access_token", self._instagram_refresh),
                Route("/2/tweets", self._x),
                Route("/{media_id}/insights", self._instagram),
            ]
        )
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-platforms")

    def _serve(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> FakePlatforms:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the fake platforms did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def set(self, platform: str, content_id: str, **counts: int) -> None:
        with self._lock:
            self.counters[(platform, content_id)] = dict(counts)

    def script(self, platform: str, *answers: Scripted) -> None:
        with self._lock:
            self.scripts[platform].extend(answers)

    def delay(self, platform: str, *seconds: float) -> None:
        """Hold the next calls to ``platform`` that long each before they arrive."""
        with self._lock:
            self.delays[platform].extend(seconds)

    def refreshes_of(self, platform: str) -> list[Refresh]:
        with self._lock:
            return [r for r in self.refreshes if r.platform == platform]

    def calls_of(self, platform: str, token: str | None = None) -> list[CallRecord]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.platform == platform and (token is None or c.token == token)
            ]

    # -- accounting ---------------------------------------------------------------

    async def _arrive(self, platform: str) -> None:
        """A delayed call (``delay``) reaches the platform only now."""
        with self._lock:
            held = self.delays[platform].popleft() if self.delays[platform] else 0.0
        if held:
            await asyncio.sleep(held)

    def _admit(
        self,
        platform: str,
        token: str,
        path: str,
        ids: tuple[str, ...] = (),
        *,
        credential_in: str = "header",
        query: str = "",
    ) -> Response | None:
        """Record the call; a scripted or an over-the-limit answer, or None to go on
        (a scripted ``real`` answer leaves its headers in ``self._extra``)."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            window = self._windows[(platform, token)]
            limit = self.limits[platform]
            while window and window[0] <= now - limit.window_s:
                window.popleft()
            window.append(now)
            over = len(window) > limit.calls
            scripted = self.scripts[platform].popleft() if self.scripts[platform] else None
            status = 429 if over else (scripted.status if scripted else 200)
            record = CallRecord(
                now,
                platform,
                token,
                path,
                status,
                ids,
                wall,
                not over and scripted is not None,
                credential_in,
                query,
            )
            self.calls.append(record)
            if over:
                self.violations.append(record)
        if over:
            return JSONResponse({"error": "over the limit"}, 429, {"Retry-After": "60"})
        if scripted is not None and scripted.real:
            self._extra[(platform, token)] = dict(scripted.headers)
            return None
        if scripted is not None:
            return JSONResponse(
                scripted.body or {"error": "scripted"}, scripted.status, scripted.headers
            )
        return None

    def _headers(self, platform: str, token: str, **real: str) -> dict[str, str]:
        """The answer's headers: the real ones, then those a ``real`` script adds."""
        with self._lock:
            return {**real, **self._extra.pop((platform, token), {})}

    def _count(self, platform: str, content_id: str) -> dict[str, int] | None:
        with self._lock:
            found = self.counters.get((platform, content_id))
            return dict(found) if found is not None else None

    # -- the platforms ----------------------------------------------------------------

    async def _instagram(self, request: Request) -> Response:
        media = request.path_params["media_id"]
        token, where = _credential(request, "access_token")
        await self._arrive("instagram")
        refused = self._admit(
            "instagram",
            token,
            request.url.path,
            (media,),
            credential_in=where,
            query=request.url.query,
        )
        if refused is not None:
            return refused
        counts = self._count("instagram", media)
        if counts is None:
            return JSONResponse({"error": {"message": "Unsupported get request", "code": 100}}, 400)
        names = request.query_params.get("metric", "").split(",")
        data = [
            {
                "name": name,
                "period": "lifetime",
                "values": [{"value": counts[name]}] if name in counts else [],
                "id": f"{media}/insights/{name}/lifetime",
            }
            for name in names
            if name
        ]
        usage = json.dumps({"call_count": 1, "total_time": 1, "total_cputime": 1})
        headers = self._headers("instagram", token, **{"X-App-Usage": usage})
        return JSONResponse({"data": data}, headers=headers)

    async def _youtube_videos(self, request: Request) -> Response:
        token, where = _credential(request, "key")
        asked = tuple(request.query_params.get("id", "").split(","))
        await self._arrive("youtube")
        refused = self._admit(
            "youtube", token, request.url.path, asked, credential_in=where, query=request.url.query
        )
        if refused is not None:
            return refused
        items = []
        for video in request.query_params.get("id", "").split(","):
            counts = self._count("youtube", video)
            if counts is not None:
                statistics = {name: str(value) for name, value in counts.items()}
                items.append({"kind": "youtube#video", "id": video, "statistics": statistics})
        headers = self._headers("youtube", token)
        return JSONResponse({"kind": "youtube#videoListResponse", "items": items}, headers=headers)

    async def _youtube_channels(self, request: Request) -> Response:
        token, where = _credential(request, "key")
        asked = tuple(request.query_params.get("id", "").split(","))
        await self._arrive("youtube")
        refused = self._admit(
            "youtube", token, request.url.path, asked, credential_in=where, query=request.url.query
        )
        if refused is not None:
            return refused
        items = []
        for channel in request.query_params.get("id", "").split(","):
            counts = self._count("youtube-channel", channel)
            if counts is not None:
                statistics = {
                    "subscriberCount": str(counts["subscriberCount"]),
                    "hiddenSubscriberCount": False,
                    "videoCount": "1",
                }
                items.append({"kind": "youtube#channel", "id": channel, "statistics": statistics})
        headers = self._headers("youtube", token)
        return JSONResponse(
            {"kind": "youtube#channelListResponse", "items": items}, headers=headers
        )

    async def _tiktok(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        body = await request.json()
        asked = tuple(body.get("filters", {}).get("video_ids", []))
        await self._arrive("tiktok")
        refused = self._admit("tiktok", token, request.url.path, asked)
        if refused is not None:
            return refused
        videos = []
        for video in asked:
            counts = self._count("tiktok", video)
            if counts is not None:
                videos.append({"id": video, **counts})
        return JSONResponse(
            {"data": {"videos": videos}, "error": {"code": "ok", "message": "", "log_id": "x"}},
            headers=self._headers("tiktok", token),
        )

    async def _x(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        asked = tuple(request.query_params.get("ids", "").split(","))
        await self._arrive("x")
        refused = self._admit("x", token, request.url.path, asked)
        if refused is not None:
            return refused
        data, errors = [], []
        for tweet in asked:
            counts = self._count("x", tweet)
            if counts is None:
                errors.append(
                    {"value": tweet, "detail": f"Could not find tweet with ids: [{tweet}]."}
                )
            else:
                data.append({"id": tweet, "text": "...", "public_metrics": counts})
        limit = self.limits["x"]
        with self._lock:
            used = len(self._windows[("x", token)])
        headers = self._headers(
            "x",
            token,
            **{
                "x-rate-limit-limit": str(limit.calls),
                "x-rate-limit-remaining": str(max(limit.calls - used, 0)),
                "x-rate-limit-reset": str(int(time.time() + limit.window_s)),
            },
        )
        answer: dict[str, Any] = {"data": data}
        if errors:
            answer["errors"] = errors
        return JSONResponse(answer, headers=headers)

    # -- token refreshes ---------------------------------------------------------------

    def _refused(self, platform: str) -> Scripted | None:
        with self._lock:
            return self.refusals[platform].popleft() if self.refusals[platform] else None

    def _issued(self, platform: str, old: str) -> str:
        with self._lock:
            return self.issue[platform].popleft() if self.issue[platform] else f"{old}-refreshed"

    def _note(self, refresh: Refresh) -> None:
        with self._lock:
            self.refreshes.append(refresh)

    async def _instagram_refresh(self, request: Request) -> Response:
        """Instagram's documented refresh: the long-lived token in the query string."""
        token = request.query_params.get("access_token", "")
        query = request.url.query
        refused = self._refused("instagram")
        if request.query_params.get("grant_type") != "ig_refresh_token" or not token:
            refused = Scripted(400, body={"error": {"message": "bad request", "code": 100}})
        if refused is not None:
            self._note(Refresh("instagram", token, refused.status, query=query))
            return JSONResponse(refused.body, refused.status)
        new = self._issued("instagram", token)
        self._note(Refresh("instagram", token, 200, new, query=query))
        return JSONResponse({"access_token": new, "token_type": "bearer", "expires_in": 5183944})

    async def _tiktok_token(self, request: Request) -> Response:
        """TikTok's refresh: form-encoded client key and secret and the refresh token."""
        form = dict(parse_qsl((await request.body()).decode()))
        token = form.get("refresh_token", "")
        refused = self._refused("tiktok")
        if form.get("grant_type") != "refresh_token" or not token or not form.get("client_key"):
            refused = Scripted(400, body={"error": "invalid_request", "log_id": "L0"})
        if refused is not None:
            self._note(Refresh("tiktok", token, refused.status, form=form))
            return JSONResponse(refused.body, refused.status)
        new = self._issued("tiktok", token)
        self._note(Refresh("tiktok", token, 200, new, form=form, query=request.url.query))
        return JSONResponse(
            {
                "access_token": new,
                "expires_in": 86400,
                "open_id": "open-id",
                "refresh_expires_in": 31536000,
                "refresh_token": f"{token}-rotated",
                "scope": "user.info.basic,video.list",
                "token_type": "Bearer",
            }
        )


def _credential(request: Request, query_name: str) -> tuple[str, str]:
    """The credential a call carried, and where: ``Authorization: Bearer`` or
    ``X-Goog-Api-Key`` (a header), or the ``query_name`` parameter."""
    bearer = request.headers.get("authorization", "")
    if bearer.startswith("Bearer "):
        return bearer.removeprefix("Bearer "), "header"
    if request.headers.get("x-goog-api-key"):
        return request.headers["x-goog-api-key"], "header"
    if query_name in request.query_params:
        return request.query_params[query_name], "query"
    return "", "none"
