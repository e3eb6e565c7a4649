"""Keeping a polling connector's expiring platform tokens fresh.

Run by the connector's poller at the start of each round, so refreshing and
polling never overlap for one credential. A credential whose ``expires_at`` is
within its platform's margin (``polling.tokens``) is refreshed; the new token is
used from the next call on and saved through the connector service, so it
survives a restart. A refresh the platform refuses, or cannot be reached for,
shows in the connector's polling health (a reason in Hypemeter's words; what the
platform said is kept apart for admins) and is tried again after 1, 2, 4 ...
minutes, at most an hour apart; so is an answer that cannot be used (malformed,
or with a lifetime no token has). A token refreshed but not yet saved (the store
was unavailable, or the secrets cannot be sealed) is saved again after the same
backoff; meanwhile the poller goes on with the new one, since the platform may
have retired the old.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from hypemeter.clock import Clock
from hypemeter.connectors.polling import PollError
from hypemeter.connectors.polling.tokens import TokenRefresher, expires_us, refresh_due

log = logging.getLogger("hypemeter.pollers")
US = 1_000_000
RETRY_FIRST_S = 60.0
RETRY_CAP_S = 3600.0
# After a refresh, none again this soon: a platform answering with a lifetime
# inside the margin must not be asked every round.
SETTLE_S = 60.0

Save = Callable[[int, Mapping[str, str], Mapping[str, str]], Awaitable[None]]


class Holder(Protocol):
    """What the keeper reads and replaces: one credential's secrets."""

    secrets: Mapping[str, str]


@dataclass(slots=True)
class Backoff:
    """When each credential's next attempt is due: 1, 2, 4 ... minutes after its
    consecutive failures, at most an hour apart."""

    failures: dict[int, int] = field(default_factory=dict)
    next_us: dict[int, int] = field(default_factory=dict)

    def due(self, index: int, now_us: int) -> bool:
        return now_us >= self.next_us.get(index, 0)

    def failed(self, index: int, now_us: int) -> float:
        """Counts a failure; the seconds until the next attempt."""
        failures = self.failures.get(index, 0) + 1
        self.failures[index] = failures
        delay_s = min(RETRY_CAP_S, RETRY_FIRST_S * 2.0 ** min(failures - 1, 16))
        self.next_us[index] = now_us + int(delay_s * US)
        return delay_s

    def succeeded(self, index: int, *, next_us: int = 0) -> None:
        self.failures.pop(index, None)
        self.next_us[index] = next_us


@dataclass(slots=True)
class RefreshHealth:
    last_refresh_us: int | None = None
    error: str | None = None  # Hypemeter's words, shown to every key that sees health
    error_detail: str | None = None  # the platform's, for admins
    error_us: int | None = None


class TokenKeeper:
    """Refreshes the tokens of one connector's credentials; owned by its poller's task."""

    def __init__(
        self,
        refresher: TokenRefresher,
        *,
        base_url: str,
        http: httpx.AsyncClient,
        clock: Clock,
        secrets: Mapping[str, str],
        save: Save,
    ) -> None:
        self._refresher = refresher
        self._base = base_url
        self._http = http
        self._clock = clock
        self._secrets = secrets
        self._save = save
        self._refreshes = Backoff()
        self._saves = Backoff()
        # index -> (the credential as stored, as refreshed): not saved yet
        self.unsaved: dict[int, tuple[Mapping[str, str], Mapping[str, str]]] = {}
        self.health = RefreshHealth()

    def earliest_expiry_us(self, credentials: Sequence[Holder]) -> int | None:
        found = [e for c in credentials if (e := expires_us(c.secrets)) is not None]
        return min(found) if found else None

    async def keep(self, credentials: Sequence[Holder]) -> None:
        """Save what is unsaved, then refresh every credential that is due (each after
        its backoff, when its last attempt failed)."""
        for index in list(self.unsaved):
            if self._saves.due(index, self._clock.now_us()):
                await self._store(index)
        for index, credential in enumerate(credentials):
            now = self._clock.now_us()
            if not self._refreshes.due(index, now) or index in self.unsaved:
                continue
            if refresh_due(credential.secrets, self._refresher.margin_s, now):
                await self._refresh(index, credential, now)

    async def _refresh(self, index: int, credential: Holder, now_us: int) -> None:
        platform = self._refresher.platform
        try:
            call = self._refresher.call(credential.secrets, self._secrets, now_us)
            response = await self._http.request(
                call.method,
                self._base + call.path,
                params=list(call.params),
                data=dict(call.form) if call.form is not None else None,
                headers=dict(call.headers),
            )
            fields = self._refresher.read(
                response.status_code, response.content, self._clock.now_us()
            )
        except PollError as exc:
            self._failed(index, exc.reason, exc.upstream)
            return
        except httpx.HTTPError as exc:
            self._failed(index, f"{platform} token refresh: {platform} unreachable", repr(exc))
            return
        except Exception as exc:  # e.g. a lifetime no datetime holds: retried later all the same
            # Only the type: the message may quote what was sent, secrets included.
            self._failed(index, f"{platform} token refresh failed: {type(exc).__name__}", None)
            return
        old = credential.secrets
        credential.secrets = {**old, **fields}
        self.unsaved[index] = (old, credential.secrets)
        self._refreshes.succeeded(index, next_us=now_us + int(SETTLE_S * US))
        self.health.last_refresh_us = now_us
        self.health.error = self.health.error_detail = self.health.error_us = None
        log.info("platform token refreshed", extra={"platform": platform, "credential": index})
        await self._store(index)

    async def _store(self, index: int) -> None:
        old, new = self.unsaved[index]
        try:
            await self._save(index, old, new)
        except Exception as exc:  # the store may be down: kept, and saved after a backoff
            error = type(exc).__name__
            delay_s = self._saves.failed(index, self._clock.now_us())
            log.warning(
                "a refreshed token could not be saved",
                extra={"credential": index, "error": error, "retry_in_s": delay_s},
            )
            self._note(f"token refreshed but not saved yet: {error}", None)
            return
        del self.unsaved[index]
        self._saves.succeeded(index)

    def _failed(self, index: int, reason: str, upstream: str | None) -> None:
        delay_s = self._refreshes.failed(index, self._clock.now_us())
        self._note(reason, upstream)
        log.warning(
            "platform token refresh failed", extra={"reason": reason, "retry_in_s": delay_s}
        )

    def _note(self, reason: str, upstream: str | None) -> None:
        self.health.error = reason[:300]
        self.health.error_detail = None if upstream is None else upstream[:300]
        self.health.error_us = self._clock.now_us()
