"""Use cases of the connectors: configuration, webhook deliveries and dead letters.

Every process keeps the connectors of all tenants in memory (webhooks name a
connector, not a tenant) and reloads them on configuration notices, like keys.
A verified delivery is answered 2xx only once its events are stored; whatever
part of it could not be counted (a field no mapping knows, an account or
content the registry does not know, content that cannot be registered) keeps the
whole delivery as a dead letter, to replay once the cause is fixed.

A disabled connector (the platform revoked our access) refuses every request
with 410. A delivery whose signed id (Twitch's message id, TikTok's signed
timestamp and digest) this process already processed is answered 2xx and
dropped. That memory is per process and lasts twice the signature's freshness
limit: a replay older than that no longer verifies, and one that reaches another
process (or follows a restart) maps to the same event ids, which the store counts
once (the dedup window). Nothing is remembered before the delivery is stored, so
a platform's retry after a failure is processed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from hypemeter.clock import Clock
from hypemeter.connectors.model import (
    CONNECTOR,
    DEAD_LETTER,
    Connector,
    DeadLetter,
    Health,
    bounded,
    check_polling,
    connector_of,
    connector_record,
    kept_headers,
    letter_of,
    letter_record,
    missing_secrets,
    new_connector_id,
    new_letter_id,
    to_event,
    with_expiry_times,
)
from hypemeter.connectors.webhooks import (
    ADAPTERS,
    NewContent,
    Receipt,
    Reply,
    WebhookMalformed,
    WebhookRefused,
)
from hypemeter.connectors.webhooks.replays import ReplayWindow
from hypemeter.connectors.webhooks.youtube import intends, topic_for
from hypemeter.errors import Conflict, Gone, InvalidInput, NotFound
from hypemeter.events.service import IngestService
from hypemeter.metrics.model import decode_id_cursor, encode_cursor
from hypemeter.registry.model import Content, key_token, rfc3339
from hypemeter.registry.ports import RegistryStore
from hypemeter.registry.service import RegistryService

log = logging.getLogger("hypemeter.connectors")
Announce = Callable[[], Awaitable[None]]
MISS_RELOAD_US = 1_000_000
# Twice Twitch's 10-minute freshness limit (a timestamp may be as far ahead), which
# covers TikTok's 5 minutes too.
REPLAY_TTL_US = 2 * 600 * 1_000_000


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook request as received."""

    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    received_us: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing a verified delivery counted, and what it could not."""

    reply: Reply
    accepted: int
    duplicates: int
    reasons: tuple[str, ...]
    summaries: tuple[str, ...] = ()  # the reasons without the payload they quote
    replayed: bool = False  # already processed: answered, not counted again


class ConnectorService:
    def __init__(
        self,
        store: RegistryStore,
        ingest: IngestService,
        registry: RegistryService,
        clock: Clock,
        *,
        announce: Announce | None = None,
    ) -> None:
        self._store = store
        self._ingest = ingest
        self._registry = registry
        self._clock = clock
        self._announce = announce
        self._connectors: dict[str, tuple[str, Connector]] = {}  # id -> (tenant, connector)
        self._health: dict[str, Health] = {}
        self._missed_reload_us = 0
        # Held by a reload and by each change of the store with its change of the map:
        # a reload that read the store before a change cannot undo it afterwards.
        self._reloading = asyncio.Lock()
        self.refused: Counter[tuple[str, str]] = Counter()  # (platform, reason) -> requests
        self.delivered: Counter[tuple[str, str]] = Counter()  # (platform, outcome) -> requests
        self._replays = ReplayWindow(REPLAY_TTL_US)
        # Set by the WebSub subscriber: told (connector id, topic, granted lease) when the
        # hub verifies a subscription this service confirmed.
        self.verified: Callable[[str, str, int | None], None] | None = None

    async def start(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        async with self._reloading:
            found = {}
            for tenant_id, record in await self._store.all_entities(CONNECTOR):
                found[record.entity_id] = (tenant_id, connector_of(record))
            self._connectors = found

    # -- configuration ----------------------------------------------------------------

    async def create(
        self,
        tenant_id: str,
        platform: str,
        secrets: Mapping[str, str],
        *,
        credentials: Sequence[Mapping[str, Any]] = (),
        poll: Mapping[str, Any] | None = None,
    ) -> Connector:
        if platform not in ADAPTERS:
            allowed = ", ".join(ADAPTERS)
            raise InvalidInput(
                f"unknown platform {platform!r}; allowed: {allowed}", field="platform"
            )
        missing = missing_secrets(platform, secrets)
        if missing:
            raise InvalidInput(
                f"{platform} connectors need the secrets {', '.join(missing)}",
                field=f"secrets.{missing[0]}",
            )
        check_polling(platform, credentials, poll or {})
        now_us = self._clock.now_us()
        connector = Connector(
            id=new_connector_id(),
            platform=platform,
            secrets=dict(secrets),
            credentials=tuple(with_expiry_times(c, now_us) for c in credentials),
            poll=dict(poll or {}),
            created_at=rfc3339(self._clock.now_us()),
        )
        async with self._reloading:
            if not await self._store.insert_entity(
                tenant_id, connector_record(connector, self._clock.now_us())
            ):
                raise Conflict("connector id collision; try again", field="id")
            self._connectors[connector.id] = (tenant_id, connector)
        await self._changed()
        return connector

    async def connectors(self, tenant_id: str) -> list[tuple[Connector, Health]]:
        records = await self._store.list_entities(
            tenant_id, CONNECTOR, tokens=[], search=None, after=None, limit=10_000
        )
        connectors = [connector_of(r) for r in records]
        return [(c, self.health(c.id)) for c in connectors]

    async def delete(self, tenant_id: str, connector_id: str) -> None:
        async with self._reloading:
            if not await self._store.delete_entity(tenant_id, CONNECTOR, connector_id):
                raise NotFound(f"no connector {connector_id!r}", field="id")
            self._connectors.pop(connector_id, None)
        await self._changed()

    # -- webhooks -------------------------------------------------------------------

    async def require(self, platform: str, connector_id: str) -> tuple[str, Connector]:
        """The tenant and connector a webhook URL names; NotFound otherwise (another
        process may have made it a moment ago: the store is asked again, at most once
        a second)."""
        found = self._connectors.get(connector_id)
        now = self._clock.now_us()
        if found is None and now - self._missed_reload_us >= MISS_RELOAD_US:
            # At most once a second: unknown ids must not make every request a scan.
            self._missed_reload_us = now
            await self.reload()
            found = self._connectors.get(connector_id)
        if found is None or found[1].platform != platform:
            raise NotFound(f"no {platform} connector {connector_id!r}", field="connector_id")
        return found

    async def require_active(self, platform: str, connector_id: str) -> tuple[str, Connector]:
        """As ``require``; Gone when the platform revoked the connector's access (the
        reason shows to the tenant's admins, not to whoever calls the webhook URL)."""
        tenant_id, connector = await self.require(platform, connector_id)
        if connector.disabled is not None:
            self.refused[(platform, "disabled")] += 1
            raise Gone(
                f"the {platform} connector {connector_id!r} is disabled; it takes no requests",
                field="connector_id",
            )
        return tenant_id, connector

    async def handshake(self, platform: str, connector_id: str, query: Mapping[str, str]) -> Reply:
        tenant_id, connector = await self.require_active(platform, connector_id)
        if platform == "youtube" and not self._youtube_intent(tenant_id, connector, query):
            return Reply(404, b"no subscription to this topic was asked for")
        adapter = ADAPTERS[platform]
        return adapter.answer_get(query, connector.secrets, now_us=self._clock.now_us())

    def _youtube_intent(
        self, tenant_id: str, connector: Connector, query: Mapping[str, str]
    ) -> bool:
        """Whether the hub verifies what this connector wants, judged from the registry
        every process holds (the process that asked the hub may be another one, or none)."""
        directory = self._registry.directory(tenant_id)
        accounts = directory.accounts if directory is not None else {}
        topics = {topic_for(account) for (on, account) in accounts if on == "youtube"}
        if not intends(query, topics):
            return False
        if self.verified is not None and query.get("hub.mode") == "subscribe":
            lease = query.get("hub.lease_seconds", "")
            granted = int(lease) if lease.isascii() and lease.isdigit() else None
            self.verified(connector.id, query.get("hub.topic", ""), granted)
        return True

    def all_connectors(self) -> list[tuple[str, Connector]]:
        """Every tenant's connectors, as (tenant, connector), from memory."""
        return list(self._connectors.values())

    def health(self, connector_id: str) -> Health:
        return self._health.get(connector_id, Health())

    async def receive(
        self, platform: str, connector_id: str, headers: Mapping[str, str], body: bytes
    ) -> Outcome:
        """Verify and count one delivery (``headers`` with lower-cased names). Raises
        WebhookRefused (counted per platform and reason), InvalidInput (a verified but
        unreadable body, or a message of a kind its signature does not cover), Gone (a
        disabled connector), Overloaded and StoreUnavailable (nothing acknowledged: the
        platform retries). A delivery already processed here is answered, not counted."""
        delivery = Delivery(headers, body, self._clock.now_us())
        tenant_id, connector = await self.require_active(platform, connector_id)
        try:
            receipt = self._verify(connector, delivery)
        except WebhookRefused as exc:
            self.refused[(platform, _reason_class(exc.reason))] += 1
            self._note(connector.id, error=f"refused: {exc.reason}")
            raise
        if receipt.unverified:  # answered 2xx as the protocol wants, and dropped
            reason = receipt.ignored or "signature"
            self.refused[(platform, _reason_class(reason))] += 1
            self._note(connector.id, error=f"refused: {reason}")
            return Outcome(receipt.reply, 0, 0, ())
        replay_key = None if receipt.message_id is None else f"{connector.id}:{receipt.message_id}"
        if replay_key is not None and self._replays.seen(replay_key, delivery.received_us):
            self.delivered[(platform, "replay")] += 1
            self._note_replay(connector.id)
            return Outcome(receipt.reply, 0, 0, (), replayed=True)
        outcome = await self._count(tenant_id, connector, receipt)
        await self._settle(tenant_id, connector, delivery, outcome)
        if receipt.disable is not None:
            await self._disable(tenant_id, connector, receipt.disable)
        if replay_key is not None:  # only once stored: a retry after a failure is processed
            self._replays.remember(replay_key, self._clock.now_us())
        return outcome

    async def _settle(
        self, tenant_id: str, connector: Connector, delivery: Delivery, outcome: Outcome
    ) -> None:
        """Keep what could not be counted as a dead letter; note the delivery."""
        platform = connector.platform
        if not outcome.reasons:
            self._note(connector.id)
            self.delivered[(platform, "counted")] += 1
            return
        letter = DeadLetter(
            id=new_letter_id(delivery.received_us),
            connector_id=connector.id,
            platform=platform,
            received_us=delivery.received_us,
            reasons=outcome.reasons,
            headers=kept_headers(delivery.headers),
            body_b64=base64.b64encode(delivery.body).decode(),
            summaries=outcome.summaries,
        )
        await self._store.insert_entity(tenant_id, letter_record(letter, self._clock.now_us()))
        first = outcome.summaries[0] if outcome.summaries else "could not be counted in full"
        self._note(connector.id, error=first, detail=outcome.reasons[0], dead_letter=True)
        self.delivered[(platform, "dead_letter")] += 1

    def _verify(self, connector: Connector, delivery: Delivery) -> Receipt:
        adapter = ADAPTERS[connector.platform]
        try:
            return adapter.receive(
                delivery.headers, delivery.body, connector.secrets, now_us=delivery.received_us
            )
        except WebhookMalformed as exc:
            raise InvalidInput(exc.reason, field=exc.field) from exc

    async def _count(self, tenant_id: str, connector: Connector, receipt: Receipt) -> Outcome:
        reasons = [f"{u.reason}: {u.payload[:200]}" for u in receipt.unmapped]
        summaries = [u.reason for u in receipt.unmapped]
        for content in receipt.content:
            problem = await self._register(tenant_id, connector.platform, content)
            if problem is not None:
                reasons.append(problem)
                summaries.append(problem)
        events = [to_event(connector.platform, mapped) for mapped in receipt.events]
        accepted = duplicates = 0
        if events:
            result = await self._ingest.ingest_events(tenant_id, events)
            accepted, duplicates = result.accepted, result.duplicates
            for rejection in result.rejected:
                mapped = receipt.events[rejection.index]
                reasons.append(f"event {mapped.event_id}: {rejection.error}")
                summaries.append(reasons[-1])
        return Outcome(
            receipt.reply, accepted, duplicates, bounded(reasons), summaries=bounded(summaries)
        )

    async def _register(self, tenant_id: str, platform: str, content: NewContent) -> str | None:
        """Register announced content under the influencer who owns the account."""
        directory = self._registry.directory(tenant_id)
        owner = None
        if directory is not None and content.account_id is not None:
            owner = directory.accounts.get((platform, content.account_id))
        if owner is None:
            return (
                f"content {content.content_id}: the {platform} account "
                f"{content.account_id!r} is not registered to an influencer"
            )
        entity = Content(
            id=content.content_id,
            platform=platform,
            influencer_id=owner,
            url=content.url,
            published_at=None if content.published_us is None else rfc3339(content.published_us),
            type=content.type,
        )
        try:
            await self._registry.create(tenant_id, entity)
        except Conflict:
            pass  # announced again (an edit, a redelivery): it is registered already
        except InvalidInput as exc:
            return f"content {content.content_id}: {exc.message}"
        return None

    async def _disable(self, tenant_id: str, connector: Connector, reason: str) -> None:
        disabled = msgspec.structs.replace(connector, disabled=reason)
        async with self._reloading:
            record = connector_record(disabled, self._clock.now_us())
            await self._store.update_entity(tenant_id, record)
            self._connectors[connector.id] = (tenant_id, disabled)
        log.warning("connector disabled by the platform", extra={"connector": connector.id})
        await self._changed()

    async def update_credential(
        self,
        tenant_id: str,
        connector_id: str,
        index: int,
        old: Mapping[str, str],
        new: Mapping[str, str],
    ) -> Connector | None:
        """Replace credential ``index`` of a connector, as ``old``, by ``new`` (a refreshed
        token) in the store and in memory; the connector saved, or None when the
        connector is gone or its credential changed meanwhile (nothing is written).
        Raises what the store raises (StoreUnavailable...)."""
        async with self._reloading:
            found = self._connectors.get(connector_id)
            if found is None or found[0] != tenant_id:
                return None
            connector = found[1]
            credentials = list(connector.credentials)
            if index >= len(credentials) or dict(credentials[index]) != dict(old):
                return None
            credentials[index] = dict(new)
            updated = msgspec.structs.replace(connector, credentials=tuple(credentials))
            record = connector_record(updated, self._clock.now_us())
            if not await self._store.update_entity(tenant_id, record):
                return None
            self._connectors[connector_id] = (tenant_id, updated)
        await self._changed()
        return updated

    def _note(
        self,
        connector_id: str,
        *,
        error: str | None = None,
        detail: str | None = None,
        dead_letter: bool = False,
    ) -> None:
        health = self._health.get(connector_id, Health())
        now = rfc3339(self._clock.now_us())
        if error is None or dead_letter:
            health = msgspec.structs.replace(
                health, deliveries=health.deliveries + 1, last_success=now
            )
        if error is not None:
            health = msgspec.structs.replace(
                health,
                refused=health.refused + (0 if dead_letter else 1),
                dead_letters=health.dead_letters + (1 if dead_letter else 0),
                last_error=error[:300],
                last_error_detail=None if detail is None else detail[:300],
                last_error_at=now,
            )
        self._health[connector_id] = health

    def _note_replay(self, connector_id: str) -> None:
        health = self._health.get(connector_id, Health())
        self._health[connector_id] = msgspec.structs.replace(health, replays=health.replays + 1)

    # -- dead letters ---------------------------------------------------------------

    async def dead_letters(
        self,
        tenant_id: str,
        *,
        connector_id: str | None,
        state: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[DeadLetter], str | None]:
        """A page of dead letters, oldest first, and the cursor of the next page."""
        scope = f"dead-letters:{connector_id}:{state}"
        tokens = []
        if connector_id:
            tokens.append(key_token("connector_id", connector_id))
        if state:
            tokens.append(key_token("state", state))
        records = await self._store.list_entities(
            tenant_id,
            DEAD_LETTER,
            tokens=tokens,
            search=None,
            after=decode_id_cursor(cursor, scope),
            limit=limit + 1,
        )
        page = [letter_of(r) for r in records[:limit]]
        more = len(records) > limit
        return page, (encode_cursor(scope, [page[-1].id]) if more and page else None)

    async def replay(self, tenant_id: str, letter_id: str) -> tuple[DeadLetter, Outcome]:
        """Process a dead letter's delivery again, as received; it is resolved when
        nothing is left uncounted. Raises NotFound (no such letter, or its connector
        is gone)."""
        record = await self._store.get_entity(tenant_id, DEAD_LETTER, letter_id)
        if record is None:
            raise NotFound(f"no dead letter {letter_id!r}", field="id")
        letter = letter_of(record)
        found = self._connectors.get(letter.connector_id)
        if found is None or found[0] != tenant_id:
            raise NotFound(f"the connector {letter.connector_id!r} is gone", field="connector_id")
        delivery = Delivery(letter.headers, letter.body(), letter.received_us)
        try:
            receipt = self._verify(found[1], delivery)
        except WebhookRefused as exc:
            raise Conflict(
                f"the delivery no longer verifies with the connector's secrets: {exc.reason}",
                field="secrets",
            ) from exc
        outcome = await self._count(tenant_id, found[1], receipt)
        updated = msgspec.structs.replace(
            letter,
            reasons=outcome.reasons or letter.reasons,
            summaries=outcome.summaries if outcome.reasons else letter.summaries,
            state="open" if outcome.reasons else "resolved",
            replays=letter.replays + 1,
        )
        await self._store.update_entity(tenant_id, letter_record(updated, self._clock.now_us()))
        return updated, outcome

    async def delete_letter(self, tenant_id: str, letter_id: str) -> None:
        """Forget a dead letter (its raw delivery with it). Raises NotFound."""
        if not await self._store.delete_entity(tenant_id, DEAD_LETTER, letter_id):
            raise NotFound(f"no dead letter {letter_id!r}", field="id")

    async def delete_letters(
        self, tenant_id: str, *, connector_id: str | None, state: str | None
    ) -> int:
        """Forget every dead letter of the tenant (of one connector, in one state, when
        given); how many."""
        deleted = 0
        while True:
            page, _ = await self.dead_letters(
                tenant_id, connector_id=connector_id, state=state, cursor=None, limit=500
            )
            for letter in page:
                deleted += await self._store.delete_entity(tenant_id, DEAD_LETTER, letter.id)
            if len(page) < 500:
                return deleted

    async def _changed(self) -> None:
        if self._announce is not None:
            await self._announce()


def _reason_class(reason: str) -> str:
    """A short, bounded label for /metrics: what kind of refusal (not its details)."""
    lowered = reason.lower()
    for label in ("missing", "stale", "no ", "match"):
        if label in lowered:
            return {"no ": "not_configured", "match": "mismatch"}.get(label, label)
    return "other"
