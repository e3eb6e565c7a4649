"""The WebSocket transport of ``/v1/stream``: runs a live ``Session`` over an accepted
WebSocket. A reader hands the session each message the client sends, a writer
drains the session's outbox, a third task asks for heartbeats; when the session is
done the socket closes with the session's close code and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hypemeter.live.access import Caller
from hypemeter.live.hub import LiveHub
from hypemeter.live.session import Session
from hypemeter.live.streams import OpenStreams


async def serve(websocket: WebSocket, hub: LiveHub, streams: OpenStreams, caller: Caller) -> None:
    """Run an accepted, authenticated WebSocket until either side ends it; raises
    RateLimited (before anything runs) when its key has all its live connections open."""
    session = Session.open(hub, caller, hub.ops.another(), now=time.monotonic())
    stream = streams.open(caller.key_id, caller.subscription_id, session.revoke)
    tasks = [
        asyncio.create_task(_write(websocket, session)),
        asyncio.create_task(_read(websocket, session)),
        asyncio.create_task(_beat(session)),
    ]
    outbox = session.outbox
    try:
        await outbox.done.wait()
    finally:
        streams.release(stream)
        session.release()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        if websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(outbox.close_code, outbox.close_reason), 1.0)


async def _write(websocket: WebSocket, session: Session) -> None:
    outbox = session.outbox
    while not outbox.done.is_set():
        message = outbox.take()
        if message is None:
            outbox.wake.clear()
            await outbox.wake.wait()
            continue
        await websocket.send_text(message)
        session.written(time.monotonic())


async def _read(websocket: WebSocket, session: Session) -> None:
    while not session.done:
        raw = await websocket.receive()
        if raw["type"] == "websocket.disconnect":
            session.outbox.end()
            return
        await session.receive(raw.get("text") or raw.get("bytes") or b"")


async def _beat(session: Session) -> None:
    while not session.done:
        wait = session.heartbeat(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
