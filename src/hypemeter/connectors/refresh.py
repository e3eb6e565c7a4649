"""Keeping a polling connector's expiring platform tokens fresh.

Run by the connector's poller at the start of each round, so refreshing and
polling never overlap for one credential. A credential whose ``expires_at`` is
within its platform's margin (``polling.tokens``) is refreshed; the new token is
used from the next call on and saved through the connector service, so it
survives a restart. A refresh the platform refuses, or cannot be reached for,
shows in the connector's polling health (a reason in Hypemeter's words; what the
platform said is kept apart for admins) and is tried again after 1, 2, 4 ...
minutes, at most an hour apart. A token refreshed but not yet saved (the store
was unavailable) is saved again on the next rounds; meanwhile the poller goes on
with the new one, since the platform may have retired the old.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
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
        self._retry_at: dict[int, int] = {}
        self._failures: dict[int, int] = {}
        # index -> (the credential as stored, as refreshed): not saved yet
        self.unsaved: dict[int, tuple[Mapping[str, str], Mapping[str, str]]] = {}
        self.health = RefreshHealth()

    def earliest_expiry_us(self, credentials: Sequence[Holder]) -> int | None:
        found = [e for c in credentials if (e := expires_us(c.secrets)) is not None]
        return min(found) if found else None

    async def keep(self, credentials: Sequence[Holder]) -> None:
        """Save what is unsaved, then refresh every credential that is due."""
        for index in list(self.unsaved):
            await self._store(index)
        for index, credential in enumerate(credentials):
            now = self._clock.now_us()
            if now < self._retry_at.get(index, 0) or index in self.unsaved:
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
        old = credential.secrets
        credential.secrets = {**old, **fields}
        self.unsaved[index] = (old, credential.secrets)
        self._failures.pop(index, None)
        self._retry_at[index] = now_us + int(SETTLE_S * US)
        self.health.last_refresh_us = now_us
        self.health.error = self.health.error_detail = self.health.error_us = None
        log.info("platform token refreshed", extra={"platform": platform, "credential": index})
        await self._store(index)

    async def _store(self, index: int) -> None:
        old, new = self.unsaved[index]
        try:
            await self._save(index, old, new)
        except Exception as exc:  # the store may be down: kept, and saved on a later round
            log.warning("a refreshed token could not be saved", extra={"credential": index})
            self._note(f"token refreshed but not saved yet: {type(exc).__name__}", None)
            return
        del self.unsaved[index]

    def _failed(self, index: int, reason: str, upstream: str | None) -> None:
        failures = self._failures.get(index, 0) + 1
        self._failures[index] = failures
        delay_s = min(RETRY_CAP_S, RETRY_FIRST_S * 2 ** min(failures - 1, 16))
        self._retry_at[index] = self._clock.now_us() + int(delay_s * US)
        self._note(reason, upstream)
        log.warning("platform token refresh failed", extra={"reason": reason})

    def _note(self, reason: str, upstream: str | None) -> None:
        self.health.error = reason[:300]
        self.health.error_detail = None if upstream is None else upstream[:300]
        self.health.error_us = self._clock.now_us()
