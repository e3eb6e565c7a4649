"""Use cases of tenants and keys: create, list, revoke, authenticate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hypemeter.auth.access_tokens import AccessTokens, looks_like_jwt
from hypemeter.auth.model import (
    ApiKey,
    KeyLimits,
    LimitsInvalid,
    NewKey,
    Principal,
    ReadNarrowing,
    Scope,
    Tenant,
    check_tenant_name,
    hash_key,
    mint_key,
    parse_limits,
    read_refusal,
)
from hypemeter.auth.ports import TenantStore
from hypemeter.clock import Clock
from hypemeter.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated

Announce = Callable[[], Awaitable[None]]
RevokeListener = Callable[[str], Awaitable[None]]


async def _nobody() -> None:
    return None


class AuthService:
    """Keys are checked against an in-memory map of hashes, kept in step with the store.

    Every change goes through this service, so a revoked key stops working
    on the very next request.
    """

    def __init__(
        self,
        store: TenantStore,
        clock: Clock,
        *,
        announce: Announce | None = None,
        tokens: AccessTokens | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        # Verifies OAuth access tokens; None where they are off (then only keys work).
        self._tokens = tokens
        # Tells the other processes of the deployment that tenants or keys changed.
        self._announce = announce or _nobody
        self._by_hash: dict[str, ApiKey] = {}
        self._tenants: set[str] = set()
        self._active_ids: frozenset[str] = frozenset()
        self._revoke_listeners: list[RevokeListener] = []

    async def load(self) -> None:
        """Fill the caches from the store; called once at start-up."""
        self._tenants = {t.tenant_id for t in await self._store.list_tenants()}
        self._by_hash = {k.key_hash: k for k in await self._store.list_keys() if k.active}
        self._active_ids = frozenset(k.key_id for k in self._by_hash.values())

    async def create_tenant(self, name: str) -> Tenant:
        try:
            tenant_id = check_tenant_name(name)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="name") from exc
        tenant = Tenant(tenant_id, self._clock.now_us())
        if not await self._store.create_tenant(tenant):
            raise Conflict(f"tenant {tenant_id!r} already exists", field="name")
        self._tenants.add(tenant_id)
        await self._announce()
        return tenant

    async def ensure_tenant(self, name: str) -> Tenant:
        """The tenant of that name, created when missing."""
        for tenant in await self._store.list_tenants():
            if tenant.tenant_id == name:
                return tenant
        return await self.create_tenant(name)

    async def list_tenants(self) -> list[Tenant]:
        return await self._store.list_tenants()

    async def create_key(
        self,
        tenant_id: str,
        scopes: frozenset[Scope],
        *,
        name: str = "",
        limits: KeyLimits | Mapping[str, Any] | None = None,
    ) -> NewKey:
        """Mint a key; ``limits`` as KeyLimits or as JSON (``parse_limits``). Raises
        NotFound for an unknown tenant, InvalidInput naming a bad scope or limit."""
        if tenant_id not in self._tenants:
            self._tenants = {t.tenant_id for t in await self._store.list_tenants()}
            if tenant_id not in self._tenants:
                raise NotFound(f"tenant {tenant_id!r} does not exist", field="tenant")
        if not scopes:
            raise InvalidInput("at least one scope is required", field="scopes")
        try:
            checked = parse_limits(
                limits.payload() if isinstance(limits, KeyLimits) else limits, scopes
            )
        except LimitsInvalid as exc:
            raise InvalidInput(exc.message, field=exc.field) from exc
        new = mint_key(
            tenant_id, scopes, name=name, created_at_us=self._clock.now_us(), limits=checked
        )
        await self._store.add_key(new.record)
        self._by_hash[new.record.key_hash] = new.record
        self._active_ids = self._active_ids | {new.record.key_id}
        await self._announce()
        return new

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        return await self._store.list_keys(tenant_id)

    async def revoke_key(self, key_id: str, *, tenant_id: str | None = None) -> ApiKey:
        """Revoke a key; with ``tenant_id`` only a key of that tenant (else NotFound)."""
        keys = await self._store.list_keys(tenant_id)
        if not any(k.key_id == key_id for k in keys):
            raise NotFound(f"no key {key_id!r}", field="key_id")
        revoked = await self._store.revoke_key(key_id, self._clock.now_us())
        if revoked is None:
            raise NotFound(f"no key {key_id!r}", field="key_id")
        # The stream tokens it minted end with it, whichever process or CLI revokes it.
        await self._store.revoke_key_stream_tokens(revoked.key_id)
        self._by_hash.pop(revoked.key_hash, None)
        self._active_ids = self._active_ids - {revoked.key_id}
        await self._announce()
        for listener in self._revoke_listeners:
            await listener(revoked.key_id)
        return revoked

    def on_revoke(self, listener: RevokeListener) -> None:
        """Call ``listener(key_id)`` after each key revoked through this service (the live
        side ends the key's open streams on every process)."""
        self._revoke_listeners.append(listener)

    def key_active(self, key_id: str) -> bool:
        """Whether the key of that id is known here and not revoked."""
        return key_id in self._active_ids

    def authenticate(self, secret: str | None) -> Principal:
        """The caller behind a key; raises Unauthenticated for a missing or unknown key."""
        if not secret:
            raise Unauthenticated(
                "an API key is required: Authorization: Bearer <key>", field="Authorization"
            )
        if looks_like_jwt(secret):
            return self._token_principal(secret)
        key = self._by_hash.get(hash_key(secret))
        if key is None:
            raise Unauthenticated("unknown or revoked API key", field="Authorization")
        return Principal(key.tenant_id, key.key_id, key.scopes, key.limits)

    def _token_principal(self, token: str) -> Principal:
        """The principal of an access token: its scopes and limits, while its key lives."""
        if self._tokens is None:
            raise Unauthenticated(
                "access tokens are not accepted here; use an API key", field="Authorization"
            )
        principal = self._tokens.verify(token, self._clock.now_us() // 1_000_000)
        if not self.key_active(principal.key_id):
            raise Unauthenticated(
                "the key that issued this access token is revoked", field="Authorization"
            )
        return principal

    @staticmethod
    def authorize(principal: Principal, scope: Scope) -> None:
        if not principal.allows(scope):
            granted = ", ".join(sorted(s.value for s in principal.scopes))
            raise Forbidden(
                f"this key lacks the {scope.value!r} scope (it has: {granted})", field="scope"
            )

    @staticmethod
    def authorize_read(
        principal: Principal,
        narrowing: ReadNarrowing,
        params: Mapping[str, list[str]],
        route: str,
    ) -> None:
        """Refuse a read outside the key's influencer or campaign limits (Forbidden naming
        the limit); see ``read_refusal``."""
        refusal = read_refusal(principal.limits, narrowing, params, route)
        if refusal is not None:
            raise Forbidden(refusal[1], field=refusal[0])
