"""Stream tokens: short-lived, read-only credentials bound to one live filter.

A web page holding a token can subscribe to what it names and nothing wider,
without ever seeing an API key. Tokens are kept in the tenant store (as hashes),
so every API process of a deployment accepts them; a process caches the tokens
it has seen until they expire. Revoking one publishes a notice on the live bus,
on which every process forgets it and closes the streams it opened there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from hypemeter.auth.model import hash_key
from hypemeter.backends.ports import LiveBus, StreamTokenRecord, Subscription, TenantStore
from hypemeter.errors import NotFound, RateLimited
from hypemeter.live.model import LiveFilter

log = logging.getLogger("hypemeter.live")
TOKEN_PREFIX = "hst_"  # noqa: S105 - a prefix that marks stream tokens, not a secret
MAX_TOKENS_PER_KEY = 10_000
REVOKED_TOPIC = "stream-tokens.revoked"


@dataclass(slots=True)
class StreamToken:
    subscription_id: str
    tenant_id: str
    key_id: str  # the API key that asked for it
    filter: LiveFilter
    metrics: tuple[str, ...]
    expires_us: int
    # Closes the streams the token opened in this process.
    closers: set[Callable[[], None]] = field(default_factory=set)

    def allows_metrics(self, names: tuple[str, ...]) -> bool:
        return set(names) <= set(self.metrics)

    def close_streams(self) -> int:
        closers = list(self.closers)
        self.closers.clear()
        for close in closers:
            close()
        return len(closers)


def _record(token: StreamToken, digest: str) -> StreamTokenRecord:
    live_filter = {k: v for k, v in token.filter.payload().items() if v is not None}
    return StreamTokenRecord(
        token.subscription_id,
        token.tenant_id,
        token.key_id,
        digest,
        json.dumps(live_filter, sort_keys=True),
        token.metrics,
        token.expires_us,
    )


def _token(record: StreamTokenRecord) -> StreamToken:
    return StreamToken(
        record.subscription_id,
        record.tenant_id,
        record.key_id,
        LiveFilter(**json.loads(record.filter)),
        record.metrics,
        record.expires_us,
    )


class StreamTokens:
    def __init__(self, store: TenantStore, bus: LiveBus) -> None:
        self._store = store
        self._bus = bus
        self._by_hash: dict[str, StreamToken] = {}  # tokens seen here, until they expire
        self._by_id: dict[str, str] = {}  # subscription id -> hash
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._subscription = self._bus.subscribe(REVOKED_TOPIC)
        await self._subscription.ready()
        self._task = asyncio.create_task(self._follow(self._subscription), name="token-revocations")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            await self._subscription.aclose()

    async def issue(
        self,
        *,
        tenant_id: str,
        key_id: str,
        live_filter: LiveFilter,
        metrics: tuple[str, ...],
        expires_us: int,
        now_us: int,
    ) -> tuple[str, StreamToken]:
        self.expire(now_us)
        secret = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
        token = StreamToken(
            f"sub_{secrets.token_hex(8)}", tenant_id, key_id, live_filter, metrics, expires_us
        )
        digest = hash_key(secret)
        stored = await self._store.add_stream_token(
            _record(token, digest), limit=MAX_TOKENS_PER_KEY, now_us=now_us
        )
        if not stored:
            raise RateLimited(
                f"at most {MAX_TOKENS_PER_KEY} stream tokens per key may be live at once; "
                "revoke some or wait for them to expire",
                retry_after=60,
                limit=MAX_TOKENS_PER_KEY,
                reset_after=60,
            )
        self._remember(token, digest)
        return secret, token

    async def resolve(self, secret: str, now_us: int) -> StreamToken | None:
        digest = hash_key(secret)
        token = self._by_hash.get(digest)
        if token is None:
            record = await self._store.find_stream_token(digest, now_us)
            if record is None:
                return None
            token = self._remember(_token(record), digest)
        if token.expires_us <= now_us:
            self._forget(token.subscription_id)
            return None
        return token

    async def revoke(self, tenant_id: str, subscription_id: str) -> tuple[StreamToken, int]:
        """Forget a token everywhere; (token, streams it had open in this process)."""
        record = await self._store.revoke_stream_token(tenant_id, subscription_id)
        if record is None:
            raise NotFound(f"no stream subscription {subscription_id!r}", field="subscription_id")
        token = self._forget(subscription_id) or _token(record)
        closed = token.close_streams()
        await self._bus.publish(REVOKED_TOPIC, subscription_id.encode())
        return token, closed

    def expire(self, now_us: int) -> None:
        for token in [t for t in self._by_hash.values() if t.expires_us <= now_us]:
            self._forget(token.subscription_id)

    def is_token(self, secret: str) -> bool:
        return secret.startswith(TOKEN_PREFIX)

    def _remember(self, token: StreamToken, digest: str) -> StreamToken:
        known = self._by_hash.setdefault(digest, token)
        self._by_id[known.subscription_id] = digest
        return known

    def _forget(self, subscription_id: str) -> StreamToken | None:
        digest = self._by_id.pop(subscription_id, None)
        return None if digest is None else self._by_hash.pop(digest, None)

    async def _follow(self, subscription: Subscription) -> None:
        dropped = 0
        async for message in subscription:
            if subscription.dropped != dropped:
                # Notices were lost: look every token up in the store again.
                dropped = subscription.dropped
                self._by_hash.clear()
                self._by_id.clear()
            token = self._forget(message.decode())
            if token is not None:
                closed = token.close_streams()
                log.info(
                    "stream token revoked elsewhere",
                    extra={"subscription_id": token.subscription_id, "closed_streams": closed},
                )
