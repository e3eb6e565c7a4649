"""The CLI's control socket: a round trip, and a data path too long for a socket."""

from __future__ import annotations

from pathlib import Path

from hypemeter.control import ControlServer, call_server, offline_auth
from hypemeter.settings import Settings


async def test_control_socket_round_trip(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path, decode_workers=0)
    async with offline_auth(settings) as auth:
        await auth.create_tenant("acme")
        server = ControlServer(settings.control_socket(), auth)
        await server.start()
        try:
            reply = await call_server(settings.control_socket(), "tenants.list", {})
        finally:
            await server.aclose()
    assert reply == {"tenants": ["acme"]}
    assert not settings.control_socket().exists()


async def test_too_long_a_socket_path_leaves_serving_alone(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    settings = Settings(data=deep, decode_workers=0)
    async with offline_auth(settings) as auth:
        server = ControlServer(settings.control_socket(), auth)
        await server.start()
        await server.aclose()
    assert await call_server(settings.control_socket(), "tenants.list", {}) is None
