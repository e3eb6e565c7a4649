"""Webhook deliveries: verify, count, keep what could not be counted as a dead letter.

A verified delivery is answered 2xx only once its events are stored; whatever part
of it could not be counted (a field no mapping knows, an account or content the
registry does not know, content that cannot be registered) keeps the whole delivery
as a dead letter, to replay once the cause is fixed.

A delivery whose signed id (Twitch's message id, TikTok's signed timestamp and
digest) this process already processed is answered 2xx and dropped. That memory is
per process and lasts twice the signature's freshness limit: a replay older than
that no longer verifies, and one that reaches another process (or follows a
restart) maps to the same event ids, which the store counts once (the dedup
window). Nothing is remembered before the delivery is stored, so a platform's retry
after a failure is processed.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec

from hypemeter.clock import Clock
from hypemeter.connectors.configuration import Announce, ConnectorConfiguration
from hypemeter.connectors.model import (
    Connector,
    DeadLetter,
    Health,
    bounded,
    kept_headers,
    letter_record,
    new_letter_id,
    to_event,
)
from hypemeter.connectors.ports import ConnectorDocuments
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
from hypemeter.errors import Conflict, InvalidInput
from hypemeter.events.service import IngestService
from hypemeter.registry.model import Content, rfc3339
from hypemeter.registry.service import RegistryService

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


class WebhookDeliveries(ConnectorConfiguration):
    """Handshakes and deliveries of the platforms' webhooks, with their counters."""

    def __init__(
        self,
        store: ConnectorDocuments,
        ingest: IngestService,
        registry: RegistryService,
        clock: Clock,
        *,
        announce: Announce | None = None,
    ) -> None:
        super().__init__(store, clock, announce=announce)
        self._ingest = ingest
        self._registry = registry
        self.delivered: Counter[tuple[str, str]] = Counter()  # (platform, outcome) -> requests
        self._replays = ReplayWindow(REPLAY_TTL_US)
        # Set by the WebSub subscriber: told (connector id, topic, granted lease) when the
        # hub verifies a subscription this service confirmed.
        self.verified: Callable[[str, str, int | None], None] | None = None

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


def _reason_class(reason: str) -> str:
    """A short, bounded label for /metrics: what kind of refusal (not its details)."""
    lowered = reason.lower()
    for label in ("missing", "stale", "no ", "match"):
        if label in lowered:
            return {"no ": "not_configured", "match": "mismatch"}.get(label, label)
    return "other"
