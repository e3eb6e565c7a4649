"""Live access as an attacker would probe it: what stream tokens and limited keys may
follow, what revoking a key ends, and the limits that keep live push from being abused.

Two module servers are shared by the tests: ``srv`` with default limits (but few stream
tokens per key), and ``tight`` with small channel, message and request budgets. Tests
that revoke or limit keys make their own keys through ``POST /v1/admin/keys``, so the
fixture keys stay usable. On the cluster profile (``HYPEMETER_E2E_CLUSTER=1``) each
server has a second API process, the twin: the revocation tests hold streams open on
both, which proves that a revocation reaches every process over the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .support import LiveServer, bearer, new_id, rfc3339, start_server, utc_now
from .test_live import (
    TIMEOUT,
    Live,
    Sse,
    ev,
    ingest,
    issue_token,
    live,
    refused,
    request,
)

# A revocation must close streams within 1 s; the deadline leaves room for a loaded test
# machine, yet stays below the 10 s periodic reload of keys, so only the bus notice
# (not the periodic reload) can meet it.
REVOKED_WITHIN = 5.0
TOKENS_PER_KEY = 3


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path_factory.mktemp("live-security"),
        decode_workers=0,
        live_coalesce_ms=0,
        stream_tokens_per_key=TOKENS_PER_KEY,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path_factory.mktemp("live-tight"),
        decode_workers=0,
        live_max_channels_per_tenant=2,
        live_ops_rate="8/minute",
        live_max_refused_ops=3,
        rate_limit="6/minute",
    )
    yield server
    server.stop()


# -- helpers ------------------------------------------------------------------------------


async def new_key(
    srv: LiveServer, scopes: list[str], limits: dict[str, Any] | None = None
) -> tuple[str, str]:
    """A new key of acme (id, secret), made with acme's admin key."""
    body: dict[str, Any] = {"scopes": scopes, "name": new_id("key")}
    if limits is not None:
        body["limits"] = limits
    response = await request(srv, "POST", "/v1/admin/keys", srv.keys["acme"].admin, json=body)
    assert response.status_code == 201, response.text
    made = response.json()
    return made["id"], made["key"]


def api_processes(srv: LiveServer) -> list[str]:
    """The base URL of every API process of the server (the twin's too, on the cluster)."""
    return [srv.url] + ([srv.twin.url] if srv.twin is not None else [])


@contextlib.asynccontextmanager
async def ws_at(base: str, key: str | None = None, token: str | None = None) -> AsyncIterator[Live]:
    url = base.replace("http://", "ws://", 1) + "/v1/stream"
    async with connect(
        f"{url}?token={token}" if token else url,
        additional_headers=bearer(key) if key else None,
        open_timeout=TIMEOUT,
        close_timeout=2,
    ) as ws:
        yield Live(ws)


@contextlib.asynccontextmanager
async def sse_at(base: str, params: dict[str, str], key: str | None = None) -> AsyncIterator[Sse]:
    async with (
        httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client,
        client.stream(
            "GET", "/v1/stream/sse", params=params, headers=bearer(key) if key else {}
        ) as response,
    ):
        yield Sse(response)


async def refused_at(base: str, key: str | None = None, token: str | None = None) -> str:
    """Open a WebSocket the server must refuse: one error, then close 1008; its code."""
    async with ws_at(base, key, token) as ws:
        error = await ws.recv()
        assert error["type"] == "error", error
        assert await ws.closed() == 1008
    code: str = error["code"]
    return code


async def close_of(ws: Live, within: float) -> tuple[int, str]:
    """Read until the server closes the WebSocket; its close code and reason."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.ws.recv()
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd is not None else (1006, "")
    except TimeoutError:
        raise AssertionError(f"the WebSocket was still open after {within} s") from None


async def rest_of(stream: Sse) -> list[tuple[str, dict[str, Any]]]:
    """The events of an SSE stream until it ends."""
    out = []
    while (got := await stream.next()) is not None:
        out.append((got.event, got.data))
    return out


# -- 1. a stream token's rights bind tail ------------------------------------------------


async def test_a_token_tails_only_with_the_right_and_only_its_filter_and_metrics(
    srv: LiveServer,
) -> None:
    read = srv.keys["acme"].read
    inf, other = new_id("inf"), new_id("inf")
    plain = await issue_token(srv, {"influencer_id": inf, "metrics": ["likes"]}, read)
    async with live(srv, token=plain["token"]) as ws:
        error = await ws.error({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        assert (error["code"], error["field"]) == ("forbidden", "op")
        assert '"tail": true' in error["message"]
        # What the token may do still works on the same connection.
        snapshot = await ws.subscribe("s", {"influencer_id": inf}, ["likes"])
        assert snapshot["totals"] == {"likes": 0}

    body = {"influencer_id": inf, "metrics": ["likes"], "tail": True}
    tailing = await issue_token(srv, body, read)
    async with live(srv, token=tailing["token"]) as ws:
        error = await ws.error({"op": "tail", "id": "o", "filter": {"influencer_id": other}})
        assert (error["code"], error["field"]) == ("forbidden", "filter")
        await ws.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        await ws.expect("tailing", "t")
        secret = new_id("comment-text")
        # Comments first, likes in a later commit: once the likes arrive, the comments'
        # commit has been routed, so had it been sent it would be in the log already.
        await ingest(srv, [ev(influencer_id=inf, metric="comments", user_id="u-1", text=secret)])
        likes = ev(influencer_id=inf, metric="likes", value=2)
        await ingest(srv, [likes])
        message = await ws.expect("event", "t")
        assert [(e["event_id"], e["metric"]) for e in message["events"]] == [
            (likes["event_id"], "likes")
        ]
        assert secret not in json.dumps(ws.log)
        assert not [m for m in ws.log if m["type"] == "event" and m is not message]


# -- 5. keys limited to influencers, on live ------------------------------------------------


async def test_a_key_limited_to_an_influencer_follows_only_that_influencer(
    srv: LiveServer,
) -> None:
    inf, other = new_id("inf"), new_id("inf")
    _, key = await new_key(srv, ["read"], {"influencers": [inf]})
    async with live(srv, key) as ws:
        for number, live_filter in enumerate(({}, {"influencer_id": other}, {"platform": "x"})):
            error = await ws.error({"op": "subscribe", "id": f"w{number}", "filter": live_filter})
            assert (error["code"], error["field"]) == ("forbidden", "filter.influencer_id")
        error = await ws.error({"op": "tail", "id": "c", "filter": {"content_id": "post-1"}})
        assert (error["code"], error["field"]) == ("forbidden", "filter.influencer_id")
        snapshot = await ws.subscribe("ok", {"influencer_id": inf}, ["likes"])
        assert snapshot["totals"] == {"likes": 0}
        await ws.send({"op": "tail", "id": "t", "filter": {"influencer_id": inf}})
        await ws.expect("tailing", "t")

    async with sse_at(srv.url, {"metrics": "likes"}, key) as stream:
        assert stream.response.status_code == 403
        error = json.loads(await stream.response.aread())["error"]
        assert error["field"] == "filter.influencer_id"
    # Its stream tokens are no wider than the key.
    response = await request(srv, "POST", "/v1/metrics/subscribe", key, json={"metrics": ["likes"]})
    assert response.status_code == 403, response.text
    assert response.json()["error"]["field"] == "body.influencer_id"
    await issue_token(srv, {"influencer_id": inf, "metrics": ["likes"]}, key)


# -- 2. revoking a key ends its live access --------------------------------------------------


async def test_revoking_a_key_closes_its_streams_and_its_tokens_streams_everywhere(
    srv: LiveServer,
) -> None:
    key_id, key = await new_key(srv, ["read"])
    inf = new_id("inf")
    token = (await issue_token(srv, {"influencer_id": inf, "metrics": ["likes"]}, key))["token"]
    params = {"influencer_id": inf, "metrics": "likes"}
    async with contextlib.AsyncExitStack() as opened:
        sockets: list[Live] = []
        streams: list[Sse] = []
        for base in api_processes(srv):
            for credential in ({"key": key}, {"token": token}):
                ws = await opened.enter_async_context(ws_at(base, **credential))
                await ws.subscribe("a", {"influencer_id": inf}, ["likes"])
                sockets.append(ws)
            for sse_params, sse_key in ((params, key), ({**params, "token": token}, None)):
                stream = await opened.enter_async_context(sse_at(base, sse_params, sse_key))
                assert stream.response.status_code == 200
                await stream.expect("snapshot")
                streams.append(stream)

        response = await request(srv, "DELETE", f"/v1/admin/keys/{key_id}", srv.keys["acme"].admin)
        assert response.status_code == 200, response.text

        closes = await asyncio.gather(*(close_of(ws, REVOKED_WITHIN) for ws in sockets))
        assert closes == [(1008, "API key revoked")] * len(sockets)
        for stream in streams:
            rest = await rest_of(stream)
            assert rest[-1] == ("error", {"code": "unauthenticated", "message": "API key revoked"})

    # Neither the key nor a token it minted opens anything any more, on any process.
    for base in api_processes(srv):
        assert await refused_at(base, key=key) == "unauthenticated"
        assert await refused_at(base, token=token) == "unauthenticated"
        async with sse_at(base, {**params, "token": token}) as stream:
            assert stream.response.status_code == 401
    assert (await request(srv, "GET", f"/v1/influencers/{inf}/metrics", key)).status_code == 401


async def test_a_new_websocket_with_a_token_of_a_revoked_key_is_refused(
    srv: LiveServer,
) -> None:
    key_id, key = await new_key(srv, ["read"])
    issued = await issue_token(srv, {"influencer_id": new_id("inf"), "metrics": ["likes"]}, key)
    # Every process has seen (and cached) the token before the key goes.
    for base in api_processes(srv):
        async with ws_at(base, token=issued["token"]) as ws:
            assert await ws.sync() == []
    response = await request(srv, "DELETE", f"/v1/admin/keys/{key_id}", srv.keys["acme"].admin)
    assert response.status_code == 200
    for base in api_processes(srv):
        assert await refused_at(base, token=issued["token"]) == "unauthenticated"
    # The key's tokens are gone from the store: revoking one is a 404, even for an admin.
    path = f"/v1/metrics/subscribe/{issued['subscription_id']}"
    assert (await request(srv, "DELETE", path, srv.keys["acme"].admin)).status_code == 404


async def test_live_tokens_per_key_are_capped(srv: LiveServer) -> None:
    _, key = await new_key(srv, ["read"])
    body = {"influencer_id": new_id("inf"), "metrics": ["likes"]}
    issued = [await issue_token(srv, body, key) for _ in range(TOKENS_PER_KEY)]
    response = await request(srv, "POST", "/v1/metrics/subscribe", key, json=body)
    assert response.status_code == 429, response.text
    assert "stream_tokens_per_key" in response.json()["error"]["message"]
    assert response.headers["retry-after"]
    # A revoked token makes room.
    path = f"/v1/metrics/subscribe/{issued[0]['subscription_id']}"
    assert (await request(srv, "DELETE", path, key)).status_code == 200
    await issue_token(srv, body, key)


# -- 12b. who may revoke a stream token -----------------------------------------------------


async def test_a_read_key_revokes_only_the_tokens_it_minted(srv: LiveServer) -> None:
    _, minter = await new_key(srv, ["read"])
    _, colleague = await new_key(srv, ["read"])
    admin = srv.keys["acme"].admin
    body = {"influencer_id": new_id("inf"), "metrics": ["likes"]}
    first, second = await issue_token(srv, body, minter), await issue_token(srv, body, minter)

    path = f"/v1/metrics/subscribe/{first['subscription_id']}"
    response = await request(srv, "DELETE", path, colleague)
    assert response.status_code == 404, response.text
    async with live(srv, token=first["token"]) as ws:  # it still works
        assert await ws.sync() == []
    assert (await request(srv, "DELETE", path, minter)).status_code == 200
    # An admin key of the tenant may revoke any; another tenant's admin may not.
    path = f"/v1/metrics/subscribe/{second['subscription_id']}"
    assert (await request(srv, "DELETE", path, srv.keys["globex"].admin)).status_code == 404
    response = await request(srv, "DELETE", path, admin)
    assert response.status_code == 200, response.text
    assert response.json()["subscription_id"] == second["subscription_id"]
    assert await refused(srv, token=second["token"]) == "unauthenticated"


# -- 7. abuse limits ---------------------------------------------------------------------------


async def test_since_reaches_back_no_further_than_the_retention(srv: LiveServer) -> None:
    read = srv.keys["acme"].read
    too_old = rfc3339(utc_now() - dt.timedelta(days=srv.settings.retention_days + 1))
    oldest = rfc3339(utc_now() - dt.timedelta(days=srv.settings.retention_days - 1))
    inf = new_id("inf")
    async with live(srv, read) as ws:
        error = await ws.error(
            {"op": "subscribe", "id": "old", "filter": {"influencer_id": inf}, "since": too_old}
        )
        assert (error["code"], error["field"]) == ("invalid_input", "since")
        assert f"{srv.settings.retention_days} days" in error["message"]
        await ws.subscribe("ok", {"influencer_id": inf}, ["likes"], since=oldest)
    async with sse_at(srv.url, {"influencer_id": inf, "since": too_old}, read) as stream:
        assert stream.response.status_code == 400
        assert json.loads(await stream.response.aread())["error"]["field"] == "since"


async def test_unknown_stream_tokens_cost_one_store_read(srv: LiveServer) -> None:
    tokens = srv.app.state.services.stream_tokens
    made_up = f"hst_{new_id('')}"
    before = tokens.store_reads
    for _ in range(3):
        assert await refused(srv, token=made_up) == "unauthenticated"
    assert tokens.store_reads == before + 1


async def test_live_channels_per_tenant_are_capped(tight: LiveServer) -> None:
    acme, globex = tight.keys["acme"], tight.keys["globex"]
    inf = new_id("inf")
    sinces = [rfc3339(utc_now() - dt.timedelta(hours=hours)) for hours in (1, 2, 3)]
    async with live(tight, acme.read) as ws:
        await ws.subscribe("a", {"influencer_id": inf}, ["likes"], since=sinces[0])
        await ws.subscribe("b", {"influencer_id": inf}, ["likes"], since=sinces[1])
        # The same channel again costs nothing; a third distinct one is refused.
        await ws.subscribe("a2", {"influencer_id": inf}, ["likes"], since=sinces[0])
        error = await ws.error(
            {"op": "subscribe", "id": "c", "filter": {"influencer_id": inf}, "since": sinces[2]}
        )
        assert error["code"] == "rate_limited"
        assert "live_max_channels_per_tenant" in error["message"]
        # Another tenant has its own budget.
        async with live(tight, globex.read) as other:
            await other.subscribe("c", {"influencer_id": inf}, ["likes"], since=sinces[2])
        # Once nobody follows a channel, it makes room for a new one.
        await ws.send({"op": "unsubscribe", "id": "b"})
        await ws.expect("unsubscribed", "b")
        await ws.subscribe("c", {"influencer_id": inf}, ["likes"], since=sinces[2])


async def test_a_flooding_websocket_is_refused_then_closed(tight: LiveServer) -> None:
    async with live(tight, tight.keys["acme"].read) as ws:
        for _ in range(8):  # the budget of live_ops_rate
            await ws.send({"op": "ping"})
            assert (await ws.answer())["type"] == "pong"
        for _ in range(2):
            error = await ws.error({"op": "ping"})
            assert error["code"] == "rate_limited"
            assert "live_ops_rate" in error["message"]
        await ws.send({"op": "ping"})  # the third refusal in a row
        code, reason = await close_of(ws, TIMEOUT)
        assert (code, reason) == (1008, "too many messages; the connection kept flooding")


async def test_opening_streams_counts_against_the_key_rate(tight: LiveServer) -> None:
    _, key = await new_key(tight, ["read"])
    for _ in range(6):  # rate_limit of the server
        async with live(tight, key) as ws:
            assert await ws.sync() == []
    assert await refused(tight, key) == "rate_limited"
    async with sse_at(tight.url, {"influencer_id": new_id("inf")}, key) as stream:
        assert stream.response.status_code == 429
