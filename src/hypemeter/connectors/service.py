"""Use cases of the connectors: configuration, webhook deliveries and dead letters.

Every process keeps the connectors of all tenants in memory (webhooks name a
connector, not a tenant) and reloads them on configuration notices, like keys.
A verified delivery is answered 2xx only once its events are stored; whatever
part of it could not be counted (a field no mapping knows, an account or
content the registry does not know, content that cannot be registered) keeps the
whole delivery as a dead letter, to replay once the cause is fixed.
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

from hypemeter.backends.ports import RegistryStore
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
)
from hypemeter.connectors.webhooks import (
    ADAPTERS,
    NewContent,
    Receipt,
    Reply,
    WebhookMalformed,
    WebhookRefused,
)
from hypemeter.errors import Conflict, InvalidInput, NotFound
from hypemeter.events.service import IngestService
from hypemeter.metrics.model import decode_id_cursor, encode_cursor
from hypemeter.registry.model import Content, key_token, rfc3339
from hypemeter.registry.service import RegistryService

log = logging.getLogger("hypemeter.connectors")
Announce = Callable[[], Awaitable[None]]
MISS_RELOAD_US = 1_000_000


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
        # Set by the WebSub subscriber: (connector id, topic, granted lease) -> asked for it?
        self.intents: Callable[[str, str, int | None], bool] | None = None

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
        connector = Connector(
            id=new_connector_id(),
            platform=platform,
            secrets=dict(secrets),
            credentials=tuple(dict(c) for c in credentials),
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

    async def handshake(self, platform: str, connector_id: str, query: Mapping[str, str]) -> Reply:
        _, connector = await self.require(platform, connector_id)
        if platform == "youtube" and self.intents is not None:
            lease = query.get("hub.lease_seconds", "")
            granted = int(lease) if lease.isdigit() else None
            topic = query.get("hub.topic", "")
            if not self.intents(connector_id, topic, granted):
                return Reply(404, b"no subscription to this topic was asked for")
        adapter = ADAPTERS[platform]
        return adapter.answer_get(query, connector.secrets, now_us=self._clock.now_us())

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
        unreadable body), Overloaded and StoreUnavailable (nothing acknowledged: the
        platform retries)."""
        delivery = Delivery(headers, body, self._clock.now_us())
        tenant_id, connector = await self.require(platform, connector_id)
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
        outcome = await self._count(tenant_id, connector, receipt)
        if outcome.reasons:
            letter = DeadLetter(
                id=new_letter_id(delivery.received_us),
                connector_id=connector.id,
                platform=platform,
                received_us=delivery.received_us,
                reasons=outcome.reasons,
                headers=kept_headers(delivery.headers),
                body_b64=base64.b64encode(delivery.body).decode(),
            )
            await self._store.insert_entity(tenant_id, letter_record(letter, self._clock.now_us()))
            self._note(connector.id, error=outcome.reasons[0], dead_letter=True)
            self.delivered[(platform, "dead_letter")] += 1
        else:
            self._note(connector.id)
            self.delivered[(platform, "counted")] += 1
        if receipt.disable is not None:
            await self._disable(tenant_id, connector, receipt.disable)
        return outcome

    def _verify(self, connector: Connector, delivery: Delivery) -> Receipt:
        adapter = ADAPTERS[connector.platform]
        try:
            return adapter.receive(
                delivery.headers, delivery.body, connector.secrets, now_us=delivery.received_us
            )
        except WebhookMalformed as exc:
            raise InvalidInput(exc.reason, field="body") from exc

    async def _count(self, tenant_id: str, connector: Connector, receipt: Receipt) -> Outcome:
        reasons = [f"{u.reason}: {u.payload[:200]}" for u in receipt.unmapped]
        for content in receipt.content:
            problem = await self._register(tenant_id, connector.platform, content)
            if problem is not None:
                reasons.append(problem)
        events = [to_event(connector.platform, mapped) for mapped in receipt.events]
        accepted = duplicates = 0
        if events:
            result = await self._ingest.ingest_events(tenant_id, events)
            accepted, duplicates = result.accepted, result.duplicates
            for rejection in result.rejected:
                mapped = receipt.events[rejection.index]
                reasons.append(f"event {mapped.event_id}: {rejection.error}")
        return Outcome(receipt.reply, accepted, duplicates, bounded(reasons))

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

    def _note(
        self, connector_id: str, *, error: str | None = None, dead_letter: bool = False
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
                last_error_at=now,
            )
        self._health[connector_id] = health

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
            state="open" if outcome.reasons else "resolved",
            replays=letter.replays + 1,
        )
        await self._store.update_entity(tenant_id, letter_record(updated, self._clock.now_us()))
        return updated, outcome

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
