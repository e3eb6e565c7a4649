"""Sending one connector's calls to its platform, within each credential's budget.

A call waits until its credential may make it (``Credential.ready_at``), counts
against the credential when sent and again from when the answer came, pauses the
credential when the platform says so (Retry-After, usage headers, remaining 0), and
is retried with exponential backoff and full jitter after a 5xx or a network error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from hypemeter.clock import Clock
from hypemeter.connectors.polling import (
    Call,
    Credential,
    PlatformPoller,
    PollError,
    Reading,
    rate_signal,
)

US = 1_000_000
ATTEMPTS = 5


class Transient(Exception):
    """A 5xx answer or a network error: worth retrying after a pause."""


class Throttled(Exception):
    """The platform asked us to slow down; the credential is paused."""


@dataclass(slots=True)
class PollHealth:
    last_success: int | None = None
    last_error: str | None = None  # Hypemeter's words
    last_error_detail: str | None = None  # what the platform answered, for admins
    last_error_us: int | None = None
    next_poll_us: int | None = None
    calls: int = 0

    def failed(self, reason: str, detail: str | None, now_us: int) -> None:
        self.last_error = reason[:300]
        self.last_error_detail = None if detail is None else detail[:300]
        self.last_error_us = now_us


class PlatformCalls:
    """The HTTP calls of one connector's poller, noted in its health."""

    def __init__(
        self,
        platform: PlatformPoller,
        *,
        base_url: str,
        http: httpx.AsyncClient,
        clock: Clock,
        backoff: tuple[float, float],
        health: PollHealth,
    ) -> None:
        self._platform = platform
        self._base = base_url
        self._http = http
        self._clock = clock
        self._backoff = backoff
        self._health = health

    async def call(self, call: Call, credential: Credential) -> list[Reading]:
        base, cap = self._backoff
        retrying = AsyncRetrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_random_exponential(multiplier=base, max=cap),
            retry=retry_if_exception_type(Transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(call, credential)
        raise AssertionError("unreachable")

    async def ready(self, credential: Credential, cost: int) -> None:
        """Wait until ``credential`` may make a call of ``cost`` units."""
        for _ in range(10_000):
            now = self._clock.now_us()
            at = credential.ready_at(now, cost)
            if at <= now:
                return
            await asyncio.sleep(min((at - now) / US, 60.0))
        raise Throttled()

    async def _send(self, call: Call, credential: Credential) -> list[Reading]:
        await self.ready(credential, call.cost)
        credential.spend(self._clock.now_us(), call.cost)
        self._health.calls += 1
        try:
            response = await self._http.request(
                call.method,
                self._base + call.path,
                params=list(call.params),
                json=call.json,
                data=dict(call.form) if call.form is not None else None,
                headers=dict(call.headers),
            )
        except httpx.TransportError as exc:
            self._failed(f"{self._platform.platform} unreachable: {exc}")
            raise Transient(f"{self._platform.platform} unreachable: {exc}") from exc
        now = self._clock.now_us()
        # The platform counted the call when it arrived, at the latest now: the window
        # log keeps the later time, so no window of the platform's holds one too many.
        credential.answered(now)
        headers = {k.lower(): v for k, v in response.headers.items()}
        signal = rate_signal(response.status_code, headers, now)
        if signal.pause_until_us is not None:
            credential.paused_until_us = max(credential.paused_until_us, signal.pause_until_us)
        if response.status_code == 429:
            if signal.pause_until_us is None:
                self._failed(f"{self._platform.platform} answered 429 without a reset time")
                raise Transient(f"{self._platform.platform} answered 429 without a reset time")
            self._failed(f"throttled until {signal.pause_until_us}: {signal.reason}")
            raise Throttled()
        if response.status_code >= 500:
            self._failed(f"{self._platform.platform} answered {response.status_code}")
            raise Transient(f"{self._platform.platform} answered {response.status_code}")
        if response.status_code >= 400:
            raise PollError(
                f"{self._platform.platform} answered {response.status_code}",
                upstream=response.text[:200],
            )
        answer = self._platform.read(call, response.status_code, response.content)
        for problem in answer.problems:
            self._failed(problem.summary, problem.upstream)
        return list(answer.readings)

    def _failed(self, reason: str, detail: str | None = None) -> None:
        self._health.failed(reason, detail, self._clock.now_us())
