"""Use cases of retention and erasure: the background purge, and forgetting an influencer.

The purge runs ``first_delay_s`` after start-up and then every ``interval_s``, on every API process
(their passes over a shared store are idempotent). It deletes events day by day,
each day one short step of the store, so ingest waits for one step at most, never
for a whole pass; then the dead letters past their TTL, in chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence

from hypemeter.changes.feed import ChangeFeed
from hypemeter.clock import Clock
from hypemeter.privacy.model import PurgeReport, RetentionPolicy, mentions
from hypemeter.privacy.ports import DeadLetters, RetainedEvents, StoredLetter
from hypemeter.registry.service import Erasure

log = logging.getLogger("hypemeter.privacy")
LETTERS_PER_STEP = 500


class PrivacyService:
    def __init__(
        self,
        store: RetainedEvents,
        letters: DeadLetters,
        clock: Clock,
        policy: RetentionPolicy,
        *,
        interval_s: float,
        first_delay_s: float = 0.0,
        changes: ChangeFeed | None = None,
    ) -> None:
        """``changes`` is told of every tenant whose events a purge or an erasure
        deleted, so that what its readers derived from change sets is repaired."""
        self._store = store
        self._changes = changes
        self._letters = letters
        self._clock = clock
        self.policy = policy
        self.interval_s = interval_s
        self.first_delay_s = first_delay_s
        self._passes = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.last: PurgeReport | None = None  # the last pass this process finished

    def now_us(self) -> int:
        return self._clock.now_us()

    async def start(self) -> None:
        """Start the background purge; its first pass begins after ``first_delay_s``."""
        self._task = asyncio.create_task(self._run(), name="hypemeter-retention")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge(self) -> PurgeReport:
        """One pass: delete what is past the retention or the dead-letter TTL now.
        Raises StoreUnavailable (the next pass tries again)."""
        async with self._passes:
            started = self._clock.now_us()
            cutoff = self.policy.events_cutoff(started)
            events: Counter[str] = Counter()
            for day in await self._store.expired_days(cutoff):
                purged = await self._store.purge_day(day.tenant_id, day.day_us, cutoff)
                events[day.tenant_id] += purged
                if purged:
                    await self._rewritten(day.tenant_id)
            letters: Counter[str] = Counter()
            before = self.policy.letters_cutoff(started)
            while gone := await self._letters.purge_letters(before, limit=LETTERS_PER_STEP):
                letters.update(gone)
            report = PurgeReport(started, self._clock.now_us(), cutoff, events, letters)
        if events or letters:
            log.info(
                "retention purge",
                extra={"events": events.total(), "dead_letters": letters.total()},
            )
        self.last = report
        return report

    async def erase(self, erasure: Erasure) -> int:
        """Forget an influencer: their events and everything derived from them, the dead
        letters naming them (``privacy.model``), then the copies the store's files keep
        of deleted rows. Returns how many events were erased."""
        erased = await self._store.erase_influencer(erasure.tenant_id, erasure.influencer_id)
        await self._rewritten(erasure.tenant_id)
        names = (erasure.influencer_id, *erasure.account_ids)
        letters = 0
        for letter_id in await self._letters_naming(erasure.tenant_id, names):
            if await self._letters.delete_letter(erasure.tenant_id, letter_id):
                letters += 1
        await self._store.reclaim()
        if letters:
            log.info(
                "dead letters naming an erased influencer erased",
                extra={"tenant": erasure.tenant_id, "dead_letters": letters},
            )
        return erased

    async def _rewritten(self, tenant_id: str) -> None:
        if self._changes is not None:
            await self._changes.rewritten(tenant_id)

    async def _letters_naming(self, tenant_id: str, names: tuple[str, ...]) -> list[str]:
        """The ids of the tenant's dead letters whose body names one of ``names``, read a
        page at a time and decoded off the event loop (bodies reach megabytes)."""
        found: list[str] = []
        after: str | None = None
        while page := await self._letters.letters(tenant_id, after=after, limit=LETTERS_PER_STEP):
            found += await asyncio.to_thread(_naming, page, names)
            after = page[-1].letter_id
        return found

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay_s)
        while True:
            try:
                await self.purge()
            except Exception:  # the loop outlives any one pass
                log.exception("retention purge failed; the next pass tries again")
            await asyncio.sleep(self.interval_s)


def _naming(letters: Sequence[StoredLetter], names: tuple[str, ...]) -> list[str]:
    return [letter.letter_id for letter in letters if mentions(letter.body(), names)]
