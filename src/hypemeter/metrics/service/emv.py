"""Earned media value per unit: the defaults, and the values a tenant sets itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hypemeter.errors import InvalidInput
from hypemeter.events.model import PLATFORMS, MetricCatalog, MetricKind, normalize_platform
from hypemeter.metrics.model import emv_table
from hypemeter.metrics.model.answers import EmvRateTable
from hypemeter.metrics.ports import MetricsStore


class EmvRates:
    """A tenant's EMV unit values, read and set through the store."""

    def __init__(self, store: MetricsStore, catalog_of: Callable[[str], MetricCatalog]) -> None:
        self._store = store
        self._catalog_of = catalog_of

    async def emv_rates(self, tenant_id: str) -> EmvRateTable:
        overrides = await self._store.emv_rates(tenant_id)
        table = emv_table(PLATFORMS, overrides)
        return EmvRateTable(
            tuple((platform, metric, value) for (platform, metric), value in sorted(table.items())),
            tuple(sorted(overrides)),
        )

    async def set_emv_rates(
        self, tenant_id: str, rates: Mapping[str, Mapping[str, float | None]]
    ) -> EmvRateTable:
        """Set values (None restores the default); the table after. Raises InvalidInput
        naming the first unknown platform, non-counter metric or value out of range."""
        catalog = self._catalog_of(tenant_id)
        changes: dict[tuple[str, str], float | None] = {}
        for raw_platform, values in rates.items():
            platform = normalize_platform(raw_platform)
            if platform is None:
                raise InvalidInput(
                    f"unknown platform {raw_platform!r}; allowed: {', '.join(PLATFORMS)}",
                    field=f"rates.{raw_platform}",
                )
            for raw_metric, value in values.items():
                metric = catalog.normalize(raw_metric)
                if metric is None or catalog.kind_of(metric) is not MetricKind.COUNTER:
                    raise InvalidInput(
                        f"{raw_metric!r} is not a counter metric of this tenant",
                        field=f"rates.{raw_platform}.{raw_metric}",
                    )
                if value is not None and not (0 <= value < 1e9):
                    raise InvalidInput(
                        "a unit value must be between 0 and 1e9",
                        field=f"rates.{raw_platform}.{raw_metric}",
                    )
                changes[(platform, metric)] = value
        await self._store.set_emv_rates(tenant_id, changes)
        return await self.emv_rates(tenant_id)
