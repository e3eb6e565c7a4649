"""The port of tenants, API keys, custom metrics, value limits and stream tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from hypemeter.auth.model import ApiKey, Tenant
from hypemeter.events.model import MetricDefinition, ValueLimit


@dataclass(frozen=True, slots=True)
class StreamTokenRecord:
    """A stream token as stored: its hash (never the token), owner, scope and expiry.

    ``filter`` is the live filter as JSON; ``metrics`` the metric names it may read;
    ``tail`` whether it may also tail raw events (comment text included).
    """

    subscription_id: str
    tenant_id: str
    key_id: str
    token_hash: str
    filter: str
    metrics: tuple[str, ...]
    expires_us: int
    tail: bool = False


class TenantStore(Protocol):
    """Tenants, their API keys, their custom metrics and their stream tokens."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def create_tenant(self, tenant: Tenant) -> bool:
        """Store a tenant; False when the name is taken."""

    async def list_tenants(self) -> list[Tenant]: ...

    async def add_key(self, key: ApiKey) -> None: ...

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Keys of one tenant, or of all tenants when None, revoked ones included."""

    async def revoke_key(self, key_id: str, revoked_at_us: int) -> ApiKey | None:
        """Mark a key revoked; None when no such key exists."""

    async def add_metric(self, tenant_id: str, metric: MetricDefinition) -> bool:
        """Register a custom metric; False when the tenant already has it."""

    async def list_metrics(self) -> list[tuple[str, MetricDefinition]]:
        """Every custom metric as (tenant_id, definition)."""

    async def set_value_limits(
        self, tenant_id: str, limits: Mapping[str, ValueLimit | None]
    ) -> None:
        """Set a tenant's bounds on event values, per metric; None removes the tenant's
        bound (the default applies again). All or nothing."""

    async def list_value_limits(self) -> list[tuple[str, str, ValueLimit]]:
        """Every tenant's own bounds as (tenant_id, metric, bound), in that order."""

    async def add_stream_token(self, token: StreamTokenRecord, *, limit: int, now_us: int) -> bool:
        """Store a token unless its key already has ``limit`` unexpired ones (False then);
        expired tokens are forgotten on the way."""

    async def find_stream_token(self, token_hash: str, now_us: int) -> StreamTokenRecord | None:
        """The unexpired token of that hash."""

    async def revoke_stream_token(
        self, tenant_id: str, subscription_id: str, *, key_id: str | None = None
    ) -> StreamTokenRecord | None:
        """Forget a tenant's token (with ``key_id``, only one that key minted); None when
        there is no such token."""

    async def revoke_key_stream_tokens(self, key_id: str) -> list[str]:
        """Forget every token a key minted (its revocation); their subscription ids."""
