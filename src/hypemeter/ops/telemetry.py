"""Prometheus metrics: request latency, ingest counters, queue depth, store size."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hypemeter.events.service import IngestStats
from hypemeter.ops.ports import StoreGauges

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _IngestCollector(Collector):
    """Ingest counters, restricted to one tenant when ``tenant_id`` is set."""

    def __init__(self, stats: IngestStats, tenant_id: str | None) -> None:
        self._stats = stats
        self._tenant = tenant_id

    def collect(self) -> Iterator[Metric]:
        accepted = CounterMetricFamily(
            "hypemeter_events_accepted", "Events committed", labels=["tenant"]
        )
        duplicates = CounterMetricFamily(
            "hypemeter_events_duplicate", "Events recognised as duplicates", labels=["tenant"]
        )
        rejected = CounterMetricFamily(
            "hypemeter_events_rejected", "Events rejected, by reason", labels=["tenant", "reason"]
        )
        with self._stats.lock:
            for tenant, value in self._stats.accepted.items():
                if self._tenant in (None, tenant):
                    accepted.add_metric([tenant], value)
            for tenant, value in self._stats.duplicates.items():
                if self._tenant in (None, tenant):
                    duplicates.add_metric([tenant], value)
            for (tenant, reason), value in self._stats.rejected.items():
                if self._tenant in (None, tenant):
                    rejected.add_metric([tenant, reason], value)
        yield accepted
        yield duplicates
        yield rejected


class _StoreCollector(Collector):
    def __init__(self, store: StoreGauges, reloads: Callable[[], int]) -> None:
        self._store = store
        self._reloads = reloads

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("hypemeter_ingest_queue_depth", "Events waiting for their commit")
        depth.add_metric([], self._store.queue_depth())
        size = GaugeMetricFamily("hypemeter_store_size_bytes", "Bytes of the store on disk")
        size.add_metric([], self._store.size_bytes())
        reloads = CounterMetricFamily(
            "hypemeter_config_reloads",
            "Reloads of keys and custom metrics from the store (notices and periodic)",
        )
        reloads.add_metric([], self._reloads())
        yield depth
        yield size
        yield reloads


WebhookCounts = Mapping[tuple[str, str], int]


class _WebhookCollector(Collector):
    """Webhook deliveries by platform and outcome, and refusals by platform and reason."""

    def __init__(self, counts: Callable[[], tuple[WebhookCounts, WebhookCounts]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        delivered, refused = self._counts()
        deliveries = CounterMetricFamily(
            "hypemeter_webhook_deliveries",
            "Verified webhook deliveries, by platform and outcome (counted, dead_letter)",
            labels=["platform", "outcome"],
        )
        for (platform, outcome), value in sorted(delivered.items()):
            deliveries.add_metric([platform, outcome], value)
        refusals = CounterMetricFamily(
            "hypemeter_webhook_refused",
            "Webhook requests refused for their signature, by platform and reason",
            labels=["platform", "reason"],
        )
        for (platform, reason), value in sorted(refused.items()):
            refusals.add_metric([platform, reason], value)
        yield deliveries
        yield refusals


class _TenantView(Collector):
    """Another collector's samples, only those labelled with one tenant."""

    def __init__(self, source: Collector, tenant_id: str) -> None:
        self._source = source
        self._tenant = tenant_id

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            view = Metric(family.name, family.documentation, family.type, family.unit)
            view.samples = [s for s in family.samples if s.labels.get("tenant") == self._tenant]
            yield view


class Telemetry:
    """Owns the process's metrics; ``render`` builds one scrape."""

    def __init__(
        self,
        stats: IngestStats,
        store: StoreGauges,
        reloads: Callable[[], int],
        *,
        webhooks: Callable[[], tuple[WebhookCounts, WebhookCounts]] | None = None,
    ) -> None:
        self._stats = stats
        self._store_collector = _StoreCollector(store, reloads)
        self._webhooks = _WebhookCollector(webhooks) if webhooks is not None else None
        self.latency = Histogram(
            "hypemeter_request_duration_seconds",
            "HTTP request latency by tenant and route",
            ["tenant", "method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )

    def observe(self, tenant_id: str, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request; ``tenant_id`` is empty when no key authenticated it."""
        self.latency.labels(tenant_id, method, route, str(status)).observe(seconds)

    def render(self, tenant_id: str | None) -> bytes:
        """Prometheus text of everything, or only what belongs to one tenant.

        A tenant's admin must not infer other tenants' traffic, so it gets its
        own series only; process-wide gauges are for the scrape token.
        """
        registry = CollectorRegistry(auto_describe=False)
        if tenant_id is None:
            registry.register(self.latency)
            registry.register(self._store_collector)
            if self._webhooks is not None:
                registry.register(self._webhooks)
        else:
            registry.register(_TenantView(self.latency, tenant_id))
        registry.register(_IngestCollector(self._stats, tenant_id))
        return generate_latest(registry)
