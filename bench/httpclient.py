"""A lean keep-alive HTTP/1.1 client on a raw asyncio Protocol.

The load client shares the machine's two cores with the server, so it does the
least work it can: requests are pre-built bytes, responses are cut by
Content-Length and nothing else is parsed. One request at a time per connection.
"""

from __future__ import annotations

import asyncio
from typing import cast

_HEAD_END = b"\r\n\r\n"
_LENGTH = b"\r\ncontent-length:"


class HttpError(Exception):
    """The connection broke or the server answered something this client cannot read."""


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    """The bytes of one HTTP/1.1 request with a Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends pre-built bytes and returns (status, body)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._closed: BaseException | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = exc or HttpError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._closed)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            reply = self._complete_reply()
        except HttpError as exc:
            self._waiter.set_exception(exc)
            return
        if reply is not None:
            self._waiter.set_result(reply)

    def _complete_reply(self) -> tuple[int, bytes] | None:
        head_end = self._buffer.find(_HEAD_END)
        if head_end < 0:
            return None
        head = bytes(self._buffer[:head_end]).lower()
        at = head.find(_LENGTH)
        if at < 0:
            raise HttpError(f"response without Content-Length: {head[:200]!r}")
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + len(_LENGTH) : stop if stop >= 0 else len(head)])
        end = head_end + 4 + length
        if len(self._buffer) < end:
            return None
        status = int(head[9:12])
        body = bytes(self._buffer[head_end + 4 : end])
        del self._buffer[:end]
        return status, body

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self._closed is not None:
            raise HttpError(f"connection is closed: {self._closed}")
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
