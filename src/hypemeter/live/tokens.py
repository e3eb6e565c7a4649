"""Stream tokens: short-lived, read-only credentials bound to one live filter.

A web page holding a token can subscribe to what it names and nothing wider,
without ever seeing an API key. Tokens live in this process's memory: they are
short-lived, and a restart ends them (the page asks for a new one).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from hypemeter.auth.model import hash_key
from hypemeter.errors import NotFound, RateLimited
from hypemeter.live.model import LiveFilter

TOKEN_PREFIX = "hst_"  # noqa: S105 - a prefix that marks stream tokens, not a secret
MAX_TOKENS_PER_KEY = 10_000


@dataclass(slots=True)
class StreamToken:
    subscription_id: str
    tenant_id: str
    key_id: str  # the API key that asked for it
    filter: LiveFilter
    metrics: tuple[str, ...]
    expires_us: int
    closers: set[Callable[[], None]] = field(default_factory=set)

    def allows_metrics(self, names: tuple[str, ...]) -> bool:
        return set(names) <= set(self.metrics)


class StreamTokens:
    def __init__(self) -> None:
        self._by_hash: dict[str, StreamToken] = {}
        self._by_id: dict[str, tuple[str, str]] = {}  # subscription id -> (tenant, hash)
        self._per_key: dict[str, int] = {}

    def issue(
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
        if self._per_key.get(key_id, 0) >= MAX_TOKENS_PER_KEY:
            raise RateLimited(
                f"at most {MAX_TOKENS_PER_KEY} stream tokens per key may be live at once; "
                "revoke some or wait for them to expire",
                retry_after=60,
                limit=MAX_TOKENS_PER_KEY,
                reset_after=60,
            )
        secret = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
        token = StreamToken(
            f"sub_{secrets.token_hex(8)}", tenant_id, key_id, live_filter, metrics, expires_us
        )
        digest = hash_key(secret)
        self._by_hash[digest] = token
        self._by_id[token.subscription_id] = (tenant_id, digest)
        self._per_key[key_id] = self._per_key.get(key_id, 0) + 1
        return secret, token

    def resolve(self, secret: str, now_us: int) -> StreamToken | None:
        token = self._by_hash.get(hash_key(secret))
        if token is None:
            return None
        if token.expires_us <= now_us:
            self._forget(token)
            return None
        return token

    def revoke(self, tenant_id: str, subscription_id: str) -> tuple[StreamToken, int]:
        """Forget a token and close the streams it opened; (token, streams closed)."""
        found = self._by_id.get(subscription_id)
        if found is None or found[0] != tenant_id:
            raise NotFound(f"no stream subscription {subscription_id!r}", field="subscription_id")
        token = self._by_hash[found[1]]
        self._forget(token)
        closers = list(token.closers)
        for close in closers:
            close()
        return token, len(closers)

    def expire(self, now_us: int) -> None:
        for token in [t for t in self._by_hash.values() if t.expires_us <= now_us]:
            self._forget(token)

    def _forget(self, token: StreamToken) -> None:
        found = self._by_id.pop(token.subscription_id, None)
        if found is not None:
            self._by_hash.pop(found[1], None)
            left = self._per_key.get(token.key_id, 1) - 1
            if left:
                self._per_key[token.key_id] = left
            else:
                self._per_key.pop(token.key_id, None)

    def is_token(self, secret: str) -> bool:
        return secret.startswith(TOKEN_PREFIX)
