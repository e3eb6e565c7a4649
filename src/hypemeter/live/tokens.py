"""Stream tokens: short-lived, read-only credentials bound to one live filter.

A web page holding a token can follow what it names and nothing wider, without ever
seeing an API key. Tokens are kept in the tenant store (as hashes), so every API
process of a deployment accepts them; a process caches the tokens it has seen until
they expire, and remembers for a while the made-up ones the store did not know.

A token is only as good as the key that minted it: resolving one checks that the key
is still active. Revoking a token, or its key, publishes a notice on the live bus;
on it every process forgets the tokens concerned and closes the streams they opened
there (and, for a key, the streams the key opened itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hypemeter.auth.model import hash_key
from hypemeter.auth.ports import StreamTokenRecord, TenantStore
from hypemeter.errors import NotFound, RateLimited
from hypemeter.live.model import LiveFilter, TokenRights, UnknownTokens
from hypemeter.live.ports import LiveBus, Subscription
from hypemeter.live.streams import KEY_REVOKED, OpenStreams
from hypemeter.live.throttle import Throttle

log = logging.getLogger("hypemeter.live")
TOKEN_PREFIX = "hst_"  # noqa: S105 - a prefix that marks stream tokens, not a secret
REVOKED_TOPIC = "stream-tokens.revoked"
KEYS_REVOKED_TOPIC = "keys.revoked"
UNKNOWN_TTL_S = 60.0
UNKNOWN_MAX = 10_000
SWEEP_MIN = 1_000
LOOKUPS = "stream-token-lookups"


@dataclass(frozen=True, slots=True)
class StreamToken:
    subscription_id: str
    tenant_id: str
    key_id: str  # the API key that minted it, which answers for its streams
    rights: TokenRights
    expires_us: int

    @property
    def filter(self) -> LiveFilter:
        return self.rights.filter

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.rights.metrics


def _record(token: StreamToken, digest: str) -> StreamTokenRecord:
    return StreamTokenRecord(
        token.subscription_id,
        token.tenant_id,
        token.key_id,
        digest,
        json.dumps(token.filter.payload(), sort_keys=True),
        token.metrics,
        token.expires_us,
        token.rights.tail,
    )


def _token(record: StreamTokenRecord) -> StreamToken:
    rights = TokenRights(LiveFilter(**json.loads(record.filter)), record.metrics, record.tail)
    return StreamToken(
        record.subscription_id, record.tenant_id, record.key_id, rights, record.expires_us
    )


class StreamTokens:
    """Issue, resolve and revoke stream tokens; end the streams of revoked tokens and keys.

    ``streams`` is the process's register of open live streams; ``per_key`` caps the
    unexpired tokens of one key; ``lookups`` (``limits`` notation) caps the store reads
    of this process for tokens it does not hold, so that a flood of made-up tokens
    cannot turn into a flood of store reads.
    """

    def __init__(
        self,
        store: TenantStore,
        bus: LiveBus,
        streams: OpenStreams,
        *,
        per_key: int,
        lookups: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._bus = bus
        self.streams = streams
        self.per_key = per_key
        self._lookups = Throttle(
            lookups, what="stream token lookups in the store", setting="stream_token_lookups"
        )
        self._monotonic = monotonic
        self._by_hash: dict[str, StreamToken] = {}  # tokens seen here, until they expire
        self._by_id: dict[str, str] = {}  # subscription id -> hash
        # Tokens resolved here are swept of expired ones whenever the cache doubles, so a
        # process that resolves tokens but never mints them (where issue() sweeps) keeps
        # at most about twice the live ones.
        self._sweep_at = SWEEP_MIN
        self._unknown = UnknownTokens(ttl_s=UNKNOWN_TTL_S, max_entries=UNKNOWN_MAX)
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.store_reads = 0  # lookups that reached the store (for tests and telemetry)

    async def start(self) -> None:
        for topic, follow in (
            (REVOKED_TOPIC, self._token_revoked),
            (KEYS_REVOKED_TOPIC, self._key_revoked),
        ):
            subscription = self._bus.subscribe(topic)
            await subscription.ready()
            self._subscriptions.append(subscription)
            self._tasks.append(
                asyncio.create_task(self._follow(subscription, follow), name=f"live-{topic}")
            )

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subscription in self._subscriptions:
            await subscription.aclose()
        self._tasks.clear()
        self._subscriptions.clear()

    async def issue(
        self,
        *,
        tenant_id: str,
        key_id: str,
        rights: TokenRights,
        expires_us: int,
        now_us: int,
    ) -> tuple[str, StreamToken]:
        """Mint a token; raises RateLimited when the key has ``per_key`` unexpired ones."""
        self.expire(now_us)
        secret = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
        token = StreamToken(f"sub_{secrets.token_hex(8)}", tenant_id, key_id, rights, expires_us)
        digest = hash_key(secret)
        stored = await self._store.add_stream_token(
            _record(token, digest), limit=self.per_key, now_us=now_us
        )
        if not stored:
            raise RateLimited(
                f"at most {self.per_key} stream tokens per key may be live at once "
                "(stream_tokens_per_key); revoke some or wait for them to expire",
                retry_after=60,
                limit=self.per_key,
                reset_after=60,
            )
        self._remember(token, digest)
        return secret, token

    async def resolve(
        self, secret: str, now_us: int, *, key_active: Callable[[str], bool]
    ) -> StreamToken | None:
        """The token, unless unknown, expired, revoked, or minted by a key no longer
        ``key_active``; raises RateLimited when this process's store lookups are spent."""
        digest = hash_key(secret)
        token = self._by_hash.get(digest)
        if token is None:
            token = await self._look_up(digest, now_us)
            if token is None:
                return None
        if token.expires_us <= now_us or not key_active(token.key_id):
            self._forget(token.subscription_id)
            return None
        return token

    async def _look_up(self, digest: str, now_us: int) -> StreamToken | None:
        now = self._monotonic()
        if self._unknown.holds(digest, now):
            return None
        await self._lookups.take(LOOKUPS)
        self.store_reads += 1
        record = await self._store.find_stream_token(digest, now_us)
        if record is None:
            self._unknown.add(digest, now)
            return None
        if len(self._by_hash) >= self._sweep_at:
            self.expire(now_us)
            self._sweep_at = max(SWEEP_MIN, 2 * len(self._by_hash))
        return self._remember(_token(record), digest)

    async def revoke(
        self, tenant_id: str, subscription_id: str, *, key_id: str | None = None
    ) -> tuple[StreamToken, int]:
        """Forget a token everywhere; with ``key_id``, only a token that key minted
        (NotFound otherwise). Returns the token and the streams it had open here."""
        record = await self._store.revoke_stream_token(tenant_id, subscription_id, key_id=key_id)
        if record is None:
            raise NotFound(f"no stream subscription {subscription_id!r}", field="subscription_id")
        token = self._forget(subscription_id) or _token(record)
        closed = self.streams.close_token(subscription_id)
        await self._bus.publish(REVOKED_TOPIC, subscription_id.encode())
        return token, closed

    async def key_revoked(self, key_id: str) -> None:
        """Tell every process that a key was revoked (its tokens are gone from the
        store already): each forgets its tokens and ends its streams."""
        await self._bus.publish(KEYS_REVOKED_TOPIC, key_id.encode())

    async def recheck(self, key_active: Callable[[str], bool]) -> None:
        """After keys were reloaded: drop what revoked keys left here, whatever notice
        was lost (a bus reconnect, a key revoked by the CLI on the store directly)."""
        for token in [t for t in self._by_hash.values() if not key_active(t.key_id)]:
            self._forget(token.subscription_id)
        ended = self.streams.close_unless(key_active)
        if ended:
            log.info("live streams of revoked keys closed", extra={"closed_streams": ended})

    def expire(self, now_us: int) -> None:
        for token in [t for t in self._by_hash.values() if t.expires_us <= now_us]:
            self._forget(token.subscription_id)

    def holds(self, subscription_id: str) -> bool:
        """Whether this process still knows the token (it forgets revoked ones)."""
        return subscription_id in self._by_id

    def is_token(self, secret: str) -> bool:
        return secret.startswith(TOKEN_PREFIX)

    def _remember(self, token: StreamToken, digest: str) -> StreamToken:
        known = self._by_hash.setdefault(digest, token)
        self._by_id[known.subscription_id] = digest
        return known

    def _forget(self, subscription_id: str) -> StreamToken | None:
        digest = self._by_id.pop(subscription_id, None)
        return None if digest is None else self._by_hash.pop(digest, None)

    def _forget_all(self) -> None:
        self._by_hash.clear()
        self._by_id.clear()

    async def _token_revoked(self, subscription_id: str) -> None:
        self._forget(subscription_id)
        closed = self.streams.close_token(subscription_id)
        if closed:
            log.info(
                "stream token revoked elsewhere",
                extra={"subscription_id": subscription_id, "closed_streams": closed},
            )

    async def _key_revoked(self, key_id: str) -> None:
        for token in [t for t in self._by_hash.values() if t.key_id == key_id]:
            self._forget(token.subscription_id)
        closed = self.streams.close_key(key_id, KEY_REVOKED)
        if closed:
            log.info("API key revoked", extra={"key_id": key_id, "closed_streams": closed})

    async def _follow(
        self, subscription: Subscription, notice: Callable[[str], Awaitable[None]]
    ) -> None:
        dropped = 0
        async for message in subscription:
            if subscription.dropped != dropped:
                # Notices were lost: look every token up in the store again; streams of
                # revoked keys end at the next reload of the keys (``recheck``).
                dropped = subscription.dropped
                self._forget_all()
            if message:
                await notice(message.decode())
