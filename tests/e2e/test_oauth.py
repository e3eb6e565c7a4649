"""OAuth 2.0 client credentials: an API key trades itself for a short-lived signed JWT,
which works wherever a key does, with no more than the key may do, while the key lives."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

from .support import LiveServer, bearer, start_server

SECRET = "an-e2e-signing-secret-of-more-than-32-bytes"
TOKEN_URL = "/v1/oauth/token"
GRANT = {"grant_type": "client_credentials"}
RATE = 40  # requests per minute per key


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("oauth"), jwt_secret=SECRET, rate_limit=f"{RATE}/minute"
    )
    yield live
    live.stop()


def new_key(srv: LiveServer, *scopes: str) -> tuple[str, str]:
    """(id, secret) of a fresh key of acme: a rate-limit bucket of its own."""
    with srv.client(srv.keys["acme"].admin) as admin:
        created = admin.post("/v1/admin/keys", json={"scopes": list(scopes)})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def mint(srv: LiveServer, key_id: str, key: str, **form: str) -> httpx.Response:
    with srv.client() as client:
        return client.post(TOKEN_URL, data={**GRANT, **form}, headers=basic(key_id, key))


def token_of(srv: LiveServer, key_id: str, key: str, **form: str) -> str:
    response = mint(srv, key_id, key, **form)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def get(srv: LiveServer, credential: str, path: str) -> httpx.Response:
    with srv.client(credential) as client:
        return client.get(path)


def test_a_key_mints_a_token_that_works_on_rest(srv: LiveServer) -> None:
    key_id, key = new_key(srv, "read")
    response = mint(srv, key_id, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "read"
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], issuer="hypemeter")
    assert (claims["sub"], claims["tid"], claims["scope"]) == (key_id, "acme", "read")
    assert claims["exp"] - claims["iat"] == 900
    assert {"iat", "exp", "jti"} <= set(claims)
    assert key not in body["access_token"]

    listed = get(srv, body["access_token"], "/v1/influencers")
    assert listed.status_code == 200, listed.text
    assert get(srv, body["access_token"], "/v1/admin/keys").status_code == 403


def test_client_credentials_may_come_as_form_fields(srv: LiveServer) -> None:
    key_id, key = new_key(srv, "read")
    with srv.client() as client:
        response = client.post(TOKEN_URL, data={**GRANT, "client_id": key_id, "client_secret": key})
    assert response.status_code == 200, response.text
    assert get(srv, response.json()["access_token"], "/v1/influencers").status_code == 200


def test_scope_narrows_the_token_and_can_never_widen_it(srv: LiveServer) -> None:
    key_id, key = new_key(srv, "read", "admin")
    narrow = token_of(srv, key_id, key, scope="read")
    assert get(srv, narrow, "/v1/influencers").status_code == 200
    refused = get(srv, narrow, "/v1/admin/keys")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    both = token_of(srv, key_id, key, scope="read admin")
    assert get(srv, both, "/v1/admin/keys").status_code == 200

    wider = mint(srv, key_id, key, scope="read ingest")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    assert "ingest" in wider.json()["error_description"]
    assert wider.headers["cache-control"] == "no-store"


def oauth_error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


def test_bad_requests_get_rfc_6749_errors(srv: LiveServer) -> None:
    key_id, key = new_key(srv, "read")
    acme = srv.keys["acme"]
    with srv.client() as client:
        cases: list[tuple[httpx.Response, tuple[int, str]]] = [
            (client.post(TOKEN_URL, data=GRANT), (401, "invalid_client")),
            (
                client.post(TOKEN_URL, data=GRANT, headers=basic(key_id, key + "x")),
                (401, "invalid_client"),
            ),
            (
                client.post(TOKEN_URL, data=GRANT, headers=basic(acme.ids["read"], key)),
                (401, "invalid_client"),
            ),
            (
                client.post(TOKEN_URL, data={"grant_type": "password"}, headers=basic(key_id, key)),
                (400, "unsupported_grant_type"),
            ),
            (client.post(TOKEN_URL, data={}, headers=basic(key_id, key)), (400, "invalid_request")),
            (
                client.post(TOKEN_URL, json=GRANT, headers=basic(key_id, key)),
                (400, "invalid_request"),
            ),
            (
                client.post(
                    TOKEN_URL,
                    data={**GRANT, "client_id": key_id, "client_secret": key},
                    headers=basic(key_id, key),
                ),
                (400, "invalid_request"),
            ),
        ]
    for response, expected in cases:
        assert oauth_error(response) == expected, response.text
        assert response.headers["cache-control"] == "no-store"
        assert isinstance(response.json()["error_description"], str)
    assert cases[0][0].headers["www-authenticate"].startswith("Basic")


def forged(claims: dict[str, Any], *, secret: str = SECRET, **header: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "at+jwt", **header})


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_wrong_expired_tampered_and_unsigned_tokens_get_401(srv: LiveServer) -> None:
    key_id, key = new_key(srv, "read")
    good = token_of(srv, key_id, key)
    claims = jwt.decode(good, SECRET, algorithms=["HS256"], issuer="hypemeter")
    now = int(time.time())
    header, _, signature = good.split(".")
    bad = {
        "wrong secret": forged(claims, secret="another-secret-of-more-than-32-bytes-too"),
        "expired": forged({**claims, "iat": now - 3000, "exp": now - 1200}),
        "tampered": f"{header}.{b64({**claims, 'scope': 'admin read'})}.{signature}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{b64(claims)}.",
        "other issuer": forged({**claims, "iss": "elsewhere"}),
        "unknown key": forged({**claims, "sub": "ffffffffffff"}),
    }
    assert get(srv, good, "/v1/influencers").status_code == 200
    for name, token in bad.items():
        response = get(srv, token, "/v1/influencers")
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthenticated", name


def test_a_revoked_keys_tokens_are_refused_at_once(srv: LiveServer) -> None:
    key_id, key = new_key(srv, "read")
    token = token_of(srv, key_id, key)
    assert get(srv, token, "/v1/influencers").status_code == 200
    with srv.client(srv.keys["acme"].admin) as admin:
        assert admin.delete(f"/v1/admin/keys/{key_id}").status_code == 200
    refused = get(srv, token, "/v1/influencers")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    assert oauth_error(mint(srv, key_id, key)) == (401, "invalid_client")


def test_a_token_counts_against_its_keys_rate_limit(srv: LiveServer) -> None:
    key_id, key = new_key(srv, "read")
    token = token_of(srv, key_id, key)  # the token request counts too
    statuses = []
    with srv.client(token) as client:
        for _ in range(RATE + 5):
            statuses.append(client.get("/v1/influencers").status_code)
            if statuses[-1] == 429:
                break
    assert statuses[-1] == 429
    assert len(statuses) <= RATE
    # One bucket: the key itself is out of requests as well.
    assert get(srv, key, "/v1/influencers").status_code == 429


async def test_a_token_opens_a_websocket(srv: LiveServer) -> None:
    key_id, key = new_key(srv, "read")
    token = token_of(srv, key_id, key)
    url = srv.url.replace("http://", "ws://", 1) + "/v1/stream"
    async with connect(url, additional_headers=bearer(token), open_timeout=10) as ws:
        await ws.send(json.dumps({"op": "ping"}))
        reply = json.loads(await ws.recv())
    assert reply["type"] == "pong"
