"""Each tenant's bounds on the value of one event, per metric: the defaults of
``events.model`` unless the tenant set its own (``PUT /v1/admin/value-limits``)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from hypemeter.errors import InvalidInput
from hypemeter.events.model import (
    MAX_VALUE_LIMIT,
    MetricCatalog,
    ValueLimit,
    default_value_limit,
)
from hypemeter.events.ports import CatalogStore


@dataclass(frozen=True, slots=True)
class LimitChange:
    """A change to one metric's bound; a None member keeps what is there."""

    max_delta: float | None = None
    max_snapshot: float | None = None


@dataclass(frozen=True, slots=True)
class MetricValueLimit:
    metric: str
    limit: ValueLimit
    default: bool  # whether it is the default one (the tenant set none)


class ValueLimits:
    """Every tenant's own bounds, kept in memory in step with the tenant store."""

    def __init__(self, store: CatalogStore, announce: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._announce = announce
        self._own: dict[str, dict[str, ValueLimit]] = {}
        # Per tenant, the bounds of every metric it may send: built once, handed to
        # every ingest request (and pickled to the workers with it).
        self._bounds: dict[str, dict[str, ValueLimit]] = {}

    async def load(self) -> None:
        """Learn the bounds set in the store (by any process)."""
        own: dict[str, dict[str, ValueLimit]] = {}
        for tenant_id, metric, limit in await self._store.list_value_limits():
            own.setdefault(tenant_id, {})[metric] = limit
        self._own = own
        self._bounds = {}

    def forget(self, tenant_id: str) -> None:
        """Drop what was built for a tenant (its metrics changed)."""
        self._bounds.pop(tenant_id, None)

    def bounds(self, tenant_id: str, catalog: MetricCatalog) -> Mapping[str, ValueLimit]:
        found = self._bounds.get(tenant_id)
        if found is None:
            own = self._own.get(tenant_id, {})
            found = {m: own.get(m) or default_value_limit(m) for m in catalog.allowed()}
            self._bounds[tenant_id] = found
        return found

    def view(self, tenant_id: str, catalog: MetricCatalog) -> list[MetricValueLimit]:
        own = self._own.get(tenant_id, {})
        return [
            MetricValueLimit(m, own.get(m) or default_value_limit(m), m not in own)
            for m in catalog.allowed()
        ]

    async def change(
        self,
        tenant_id: str,
        catalog: MetricCatalog,
        changes: Mapping[str, LimitChange | None],
    ) -> list[MetricValueLimit]:
        """Set or (None) drop a tenant's bounds; raises InvalidInput naming the metric."""
        own = self._own.get(tenant_id, {})
        updates: dict[str, ValueLimit | None] = {}
        for raw, change in changes.items():
            metric = catalog.normalize(raw)
            if metric is None:
                raise InvalidInput(
                    f"unknown metric {raw!r}; allowed: {', '.join(catalog.allowed())}",
                    field=f"metrics.{raw}",
                )
            if change is None:
                updates[metric] = None
                continue
            current = own.get(metric) or default_value_limit(metric)
            updates[metric] = ValueLimit(
                _bound(raw, "max_delta", change.max_delta, current.max_delta),
                _bound(raw, "max_snapshot", change.max_snapshot, current.max_snapshot),
            )
        await self._store.set_value_limits(tenant_id, updates)
        mine = self._own.setdefault(tenant_id, {})
        for metric, limit in updates.items():
            if limit is None:
                mine.pop(metric, None)
            else:
                mine[metric] = limit
        self.forget(tenant_id)
        await self._announce()
        return self.view(tenant_id, catalog)


def _bound(metric: str, name: str, value: float | None, current: float) -> float:
    if value is None:
        return current
    if not (math.isfinite(value) and 0 < value <= MAX_VALUE_LIMIT):
        raise InvalidInput(
            f"{name} must be above 0 and at most {MAX_VALUE_LIMIT:g}",
            field=f"metrics.{metric}.{name}",
        )
    return float(value)
