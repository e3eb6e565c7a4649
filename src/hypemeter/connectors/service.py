"""Use cases of the connectors: configuration, webhook deliveries and dead letters.

``ConnectorService`` is what routes, pollers and the WebSub subscriber use: the
configuration (connectors.configuration), the deliveries (connectors.deliveries) and,
here, the dead letters a delivery left, listed, replayed and deleted.
"""

from __future__ import annotations

import msgspec

from hypemeter.connectors.configuration import (
    MISS_RELOAD_US,
    Announce,
    ConnectorConfiguration,
)
from hypemeter.connectors.deliveries import (
    REPLAY_TTL_US,
    Delivery,
    Outcome,
    WebhookDeliveries,
)
from hypemeter.connectors.model import DEAD_LETTER, DeadLetter, letter_of, letter_record
from hypemeter.connectors.webhooks import WebhookRefused
from hypemeter.errors import Conflict, NotFound
from hypemeter.metrics.model import decode_id_cursor, encode_cursor
from hypemeter.registry.model import key_token

__all__ = [
    "MISS_RELOAD_US",
    "REPLAY_TTL_US",
    "Announce",
    "ConnectorConfiguration",
    "ConnectorService",
    "Delivery",
    "Outcome",
    "WebhookDeliveries",
]


class ConnectorService(WebhookDeliveries):
    """The connectors' configuration and deliveries, and the dead letters they left."""

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
