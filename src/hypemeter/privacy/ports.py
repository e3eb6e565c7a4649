"""The ports of retention and erasure: the parts of the stores a purge or an erasure uses.

``app.py`` hands the privacy service the event store and the connectors' dead letters
(``connectors.letters``); these Protocols name what it needs of them, so privacy
depends on their shape, not on the events' store port or the connectors' internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ExpiringDay(Protocol):
    """A UTC day of one tenant with events past the retention: what one purge step takes."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def day_us(self) -> int: ...


class RetainedEvents(Protocol):
    """The stored events, as retention and erasure delete them. Every method raises what
    the store raises (StoreUnavailable...)."""

    async def expired_days(self, cutoff_us: int) -> Sequence[ExpiringDay]:
        """The (tenant, UTC day) pairs before ``cutoff_us`` (a day boundary) holding events
        a purge deletes, oldest first."""

    async def purge_day(self, tenant_id: str, day_us: int, cutoff_us: int) -> int:
        """Delete the tenant's events of one UTC day before ``cutoff_us`` (but the kept
        readings) with their rollups, in one short step; how many events were deleted."""

    async def erase_influencer(self, tenant_id: str, influencer_id: str) -> int:
        """Delete one influencer's events and everything derived from them, atomically;
        how many events were erased."""

    async def reclaim(self) -> None:
        """After an erasure: drop the copies of deleted rows the store's files still hold."""


class StoredLetter(Protocol):
    """A dead letter as stored: ``body`` decodes it (bodies reach megabytes: off the loop)."""

    @property
    def letter_id(self) -> str: ...

    def body(self) -> bytes:
        """The delivery's raw body, as the platform sent it."""


class DeadLetters(Protocol):
    """The connectors' dead letters (``connectors.letters.DeadLetterArchive``). Every
    method raises what the store raises (StoreUnavailable...)."""

    async def purge_letters(self, changed_before_us: int, *, limit: int) -> list[str]:
        """Delete at most ``limit`` dead letters, of every tenant, received or last
        replayed before ``changed_before_us``; the tenant of each one deleted."""

    async def letters(
        self, tenant_id: str, *, after: str | None, limit: int
    ) -> Sequence[StoredLetter]:
        """The tenant's dead letters by id, after ``after``, at most ``limit``."""

    async def delete_letter(self, tenant_id: str, letter_id: str) -> bool:
        """Remove one dead letter; False if there was none."""
