"""Shared helpers of the webhook suites (``test_webhooks*.py``).

Each platform's signature is computed here the way the platform computes it (see
the module docstrings under ``src/hypemeter/connectors/webhooks/``), over bodies
built with recent times. ``Webhooks`` wraps one tenant of a live server: it creates
connectors and influencers, delivers signed requests without an API key, reads
counts back through the query API, and reads health, ``/metrics`` and dead letters.

On the cluster profile webhook deliveries and replays are not ingest paths the
client hooks know of, so ``Webhooks`` waits after each of them until the workers
committed what the log holds. Queries (and handshakes, which are ``GET /v1/..``)
alternate between the two API processes; health and ``/metrics`` are what one
process saw, so they are read from the primary, which receives every delivery.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from . import cluster
from .support import SCRAPE_TOKEN, LiveServer, bearer, start_server

# Every secret value is recognisable, so answers can be searched for it.
SECRET_NAMES: Mapping[str, tuple[str, ...]] = {
    "instagram": ("app_secret", "verify_token"),
    "facebook": ("app_secret", "verify_token"),
    "youtube": ("hub_secret",),
    "tiktok": ("client_secret",),
    "x": ("consumer_secret",),
    "linkedin": ("client_secret",),
    "twitch": ("eventsub_secret",),
}
PLATFORMS = tuple(SECRET_NAMES)
PERIOD = {"period": "2h", "granularity": "hour"}  # the current and the previous hour
INVALID_SIGNATURE = "invalid_signature"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def secrets_for(platform: str) -> dict[str, str]:
    return {name: f"{platform}-{name}-{uuid.uuid4().hex}" for name in SECRET_NAMES[platform]}


def now_s(seconds_ago: float = 60.0) -> int:
    return int(time.time() - seconds_ago)


def rfc3339_ns(seconds_ago: float = 60.0) -> str:
    """A time as Twitch writes it: RFC 3339 with nanoseconds and ``Z``."""
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def rfc3339_s(seconds_ago: float = 60.0) -> str:
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def stamp_of(unix_s: int) -> str:
    """How the registry writes a time: RFC 3339, microseconds, ``Z``."""
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _hex(secret: str, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, digest).hexdigest()


# -- signatures, as each platform sends them ---------------------------------


def meta_signed(secret: str, body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + _hex(secret, body)}


def youtube_signed(secret: str, body: bytes, method: str = "sha1") -> dict[str, str]:
    return {"X-Hub-Signature": f"{method}=" + _hex(secret, body, method)}


def tiktok_signed(secret: str, body: bytes, *, sent_s: int | None = None) -> dict[str, str]:
    sent = now_s(5) if sent_s is None else sent_s
    return {"TikTok-Signature": f"t={sent},s=" + _hex(secret, f"{sent}.".encode() + body)}


def x_signed(secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"X-Twitter-Webhooks-Signature": "sha256=" + base64.b64encode(digest).decode()}


def x_crc(secret: str, token: str) -> str:
    digest = hmac.new(secret.encode(), token.encode(), hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def linkedin_signed(secret: str, body: bytes) -> dict[str, str]:
    return {"X-LI-Signature": _hex(secret, b"hmacsha256=" + body)}


def twitch_signed(
    secret: str,
    body: bytes,
    *,
    kind: str = "notification",
    message_id: str | None = None,
    sent: str | None = None,
) -> dict[str, str]:
    message_id = message_id or str(uuid.uuid4())
    sent = sent or rfc3339_ns(5)
    return {
        "Twitch-Eventsub-Message-Id": message_id,
        "Twitch-Eventsub-Message-Timestamp": sent,
        "Twitch-Eventsub-Message-Signature": "sha256="
        + _hex(secret, (message_id + sent).encode() + body),
        "Twitch-Eventsub-Message-Type": kind,
        "Twitch-Eventsub-Message-Retry": "0",
        "Twitch-Eventsub-Subscription-Type": "channel.poll.progress",
        "Twitch-Eventsub-Subscription-Version": "1",
    }


# -- the live server and one tenant's view of it ------------------------------


def module_server(factory: pytest.TempPathFactory, name: str) -> Iterator[LiveServer]:
    """One live server (scrape token set) for a whole module: the tests tell their
    writes apart by unique influencer, account and connector ids."""
    live = start_server(factory.mktemp(name), metrics_token=SCRAPE_TOKEN)
    yield live
    live.stop()


@dataclass(frozen=True)
class Connector:
    id: str
    platform: str
    url: str
    secrets: dict[str, str]

    def secret(self) -> str:
        """The signing secret (Meta's app_secret, or the platform's only secret)."""
        name = "app_secret" if "app_secret" in self.secrets else next(iter(self.secrets))
        return self.secrets[name]


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


class Webhooks:
    """One tenant of a live server, as a platform and as the tenant's admin see it."""

    def __init__(self, srv: LiveServer, tenant: str = "acme") -> None:
        self.srv = srv
        self.tenant = tenant
        keys = srv.keys[tenant]
        self.admin = srv.client(keys.admin)
        self.read = srv.client(keys.read)
        self.platform = srv.client()  # no API key: platforms sign instead
        # Health and replays: on the primary, which receives every delivery.
        self.primary = httpx.Client(base_url=srv.url, headers=bearer(keys.admin), timeout=30)
        self.scrape = srv.client(SCRAPE_TOKEN)

    def __enter__(self) -> Webhooks:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in (self.admin, self.read, self.platform, self.primary, self.scrape):
            client.close()

    def settle(self) -> None:
        if self.srv.settings.log:
            cluster.settle(self.srv.settings)

    # -- configuration --

    def connector(
        self, platform: str, secrets: dict[str, str] | None = None, *, url: str | None = None
    ) -> Connector:
        """A new connector, made through the primary (or the API process at ``url``)."""
        secrets = secrets or secrets_for(platform)
        request = {"platform": platform, "secrets": secrets}
        if url is None:
            response = self.admin.post("/v1/admin/connectors", json=request)
        else:
            key = self.srv.keys[self.tenant].admin
            with httpx.Client(base_url=url, headers=bearer(key), timeout=30) as other:
                response = other.post("/v1/admin/connectors", json=request)
        assert response.status_code == 201, response.text
        body = response.json()
        for value in secrets.values():
            assert value not in response.text
        assert body["platform"] == platform
        assert body["callback_url"] == f"/v1/webhooks/{platform}/{body['id']}"
        assert body["secrets"] == sorted(secrets)
        return Connector(body["id"], platform, body["callback_url"], secrets)

    def influencer(self, platform: str, account_id: str, influencer_id: str = "") -> str:
        influencer_id = influencer_id or unique("inf-")
        body = {
            "id": influencer_id,
            "name": f"Influencer {influencer_id}",
            "accounts": [{"platform": platform, "account_id": account_id}],
        }
        response = self.admin.post("/v1/influencers", json=body)
        assert response.status_code == 201, response.text
        return influencer_id

    # -- the platform's side --

    def handshake(self, connector: Connector, params: dict[str, str]) -> httpx.Response:
        return self.platform.get(connector.url, params=params)

    def deliver(
        self,
        connector: Connector,
        body: bytes,
        headers: Mapping[str, str],
        *,
        url: str | None = None,
    ) -> httpx.Response:
        """POST a delivery as the platform does (on ``url``: another API process)."""
        target = (url or "") + connector.url
        headers = {"Content-Type": "application/json", **headers}
        response = self.platform.post(target, content=body, headers=headers)
        if response.status_code < 300:
            self.settle()
        return response

    def refused(self, response: httpx.Response, status: int) -> str:
        """Check a refusal answer and return its message."""
        message: str = error_of(response, status, INVALID_SIGNATURE)["message"]
        return message

    # -- what the tenant reads back --

    def totals(self, influencer_id: str, metrics: str, **params: str) -> dict[str, Any]:
        response = self.read.get(
            f"/v1/influencers/{influencer_id}/metrics",
            params={**PERIOD, "metrics": metrics, **params},
        )
        assert response.status_code == 200, response.text
        totals: dict[str, Any] = response.json()["totals"]
        return totals

    def content(self, content_id: str) -> httpx.Response:
        return self.read.get(f"/v1/content/{content_id}")

    def content_of(self, influencer_id: str) -> list[dict[str, Any]]:
        response = self.read.get("/v1/content", params={"influencer_id": influencer_id})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["data"]
        return items

    def connectors(self) -> list[dict[str, Any]]:
        response = self.primary.get("/v1/admin/connectors")
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def health(self, connector: Connector) -> dict[str, Any]:
        found = [c for c in self.connectors() if c["id"] == connector.id]
        assert len(found) == 1, found
        health: dict[str, Any] = found[0]["health"]
        return health

    def dead_letters(self, connector: Connector | str, **params: Any) -> list[dict[str, Any]]:
        connector_id = connector if isinstance(connector, str) else connector.id
        response = self.admin.get(
            "/v1/admin/dead-letters", params={"connector_id": connector_id, **params}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["next_cursor"] is None, body
        letters: list[dict[str, Any]] = body["data"]
        return letters

    def replay(self, letter_id: str) -> httpx.Response:
        response = self.primary.post(f"/v1/admin/dead-letters/{letter_id}/replay")
        if response.status_code < 300:
            self.settle()
        return response

    def replayed(self, letter_id: str) -> dict[str, Any]:
        response = self.replay(letter_id)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def telemetry(self, family: str, platform: str) -> dict[str, float]:
        """One ``hypemeter_webhook_<family>_total`` family of /metrics for one platform,
        by its other label (reason or outcome)."""
        response = self.scrape.get("/metrics")
        assert response.status_code == 200, response.text
        prefix = f"hypemeter_webhook_{family}_total{{"
        found: dict[str, float] = {}
        for line in response.text.splitlines():
            if not line.startswith(prefix):
                continue
            labels_text, value = line[len(prefix) :].rsplit("} ", 1)
            labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
            labels = {k: v.strip('"') for k, v in labels.items()}
            if labels.pop("platform") == platform:
                (other,) = labels.values()
                found[other] = float(value)
        return found


def reason(why: str, payload: str) -> str:
    """A dead letter's reason: what could not be mapped, and (the start of) the part."""
    return f"{why}: {payload[:200]}"


def grown(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What a counter family gained between two scrapes (labels that did not move left out)."""
    changed = {k: after[k] - before.get(k, 0.0) for k in after}
    return {k: v for k, v in changed.items() if v}


def process_urls(srv: LiveServer) -> list[str]:
    """The base URL of every API process of the server (the twin's on the cluster)."""
    urls = [srv.url]
    if srv.twin is not None:
        urls.append(f"http://127.0.0.1:{srv.twin.port}")
    return urls
