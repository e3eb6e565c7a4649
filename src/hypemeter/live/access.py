"""Who is on a live connection, and what it may follow.

A live stream opens with a read key (in a header or ``?token=``) or a stream token.
Either way the key that answers for it must be active, and opening counts against
that key's request rate. What the caller may then follow is bounded by the token's
rights and by the key's limits (see ``TokenRights`` and ``check_limits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from hypemeter.auth.model import Principal, Scope
from hypemeter.clock import Clock
from hypemeter.errors import Unauthenticated
from hypemeter.live.channel import ChannelKey
from hypemeter.live.config import LiveConfig
from hypemeter.live.model import (
    LiveFilter,
    check_limits,
    parse_filter,
    parse_grain,
    parse_metrics,
    parse_since,
    tail_metrics,
)
from hypemeter.live.tokens import StreamToken


class Catalog(Protocol):
    """What checking a subscription asks of the hub: its metric names, clock and settings."""

    @property
    def clock(self) -> Clock: ...

    @property
    def config(self) -> LiveConfig: ...

    def metric_names(self, tenant_id: str, metrics: str) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """A read key (``token`` None), or a stream token limited to its rights."""

    principal: Principal
    token: StreamToken | None = None

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def key_id(self) -> str:
        """The key that answers for the caller: a token's is the key that minted it."""
        return self.token.key_id if self.token is not None else self.principal.key_id

    @property
    def subscription_id(self) -> str | None:
        return self.token.subscription_id if self.token is not None else None

    def check(
        self, live_filter: LiveFilter, metrics: tuple[str, ...] | None, *, tail: bool = False
    ) -> None:
        """Raise Forbidden unless the caller may follow the filter (and metrics); a tail
        asks for the right to tail besides."""
        if self.token is not None:
            self.token.rights.check(live_filter, metrics, tail=tail)
        check_limits(self.principal.limits, live_filter, metrics)

    def tail_metrics(self) -> frozenset[str] | None:
        """The metrics whose raw events a tail of this caller may receive; None: any."""
        rights = self.token.rights if self.token is not None else None
        return tail_metrics(rights, self.principal.limits)


async def open_caller(services: Any, secret: str | None) -> Caller:
    """The caller behind a key or stream token, its request counted against the key.

    Raises Unauthenticated (unknown, expired or revoked credential, or a token whose
    key was revoked), Forbidden (a key without the read scope) or RateLimited.
    """
    tokens = services.stream_tokens
    if secret and tokens.is_token(secret):
        token = await tokens.resolve(
            secret, services.live.clock.now_us(), key_active=services.auth.key_active
        )
        if token is None:
            raise Unauthenticated("unknown, expired or revoked stream token", field="token")
        principal = Principal(
            token.tenant_id, f"token:{token.subscription_id}", frozenset({Scope.READ})
        )
        caller = Caller(principal, token)
    else:
        principal = services.auth.authenticate(secret)
        services.auth.authorize(principal, Scope.READ)
        caller = Caller(principal)
    await services.rate_limiter.hit_request(caller.key_id)
    # A revocation handled while the request was counted would miss this stream, which
    # is registered only after it: look again, with no await between here and then.
    if not services.auth.key_active(caller.key_id) or (
        caller.token is not None and not tokens.holds(caller.token.subscription_id)
    ):
        raise Unauthenticated("this credential was revoked", field="token")
    return caller


def channel_key(caller: Caller, message: dict[str, Any], hub: Catalog) -> ChannelKey:
    """The channel a subscription asks for, once the caller may follow it."""
    live_filter = parse_filter(message.get("filter"))
    names = hub.metric_names(caller.tenant_id, parse_metrics(message.get("metrics")))
    caller.check(live_filter, names)
    now_us = hub.clock.now_us()
    return ChannelKey(
        caller.tenant_id,
        live_filter,
        ",".join(names),
        parse_grain(message.get("granularity")),
        parse_since(message.get("since"), now_us, retention_days=hub.config.retention_days),
    )
