"""``create_app(settings)``: the one place that wires backends, services and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from hypemeter import __version__
from hypemeter.api import (
    handle_http_error,
    handle_hypemeter_error,
    handle_validation_error,
)
from hypemeter.auth.audit_log import AuditLog
from hypemeter.auth.audit_middleware import AuditMiddleware
from hypemeter.auth.audit_routes import router as audit_router
from hypemeter.auth.oauth import TokenIssuer
from hypemeter.auth.oauth_routes import router as oauth_router
from hypemeter.auth.ports import TenantStore
from hypemeter.auth.ratelimit import RateLimiter
from hypemeter.auth.routes import router as keys_router
from hypemeter.auth.service import AuthService
from hypemeter.auth.token_secret import access_tokens_of
from hypemeter.backends.dsn import redacted
from hypemeter.backends.selection import Check, open_backends
from hypemeter.changes.feed import ChangeFeed
from hypemeter.clock import Clock, SystemClock
from hypemeter.connectors.letters import DeadLetterArchive
from hypemeter.connectors.routes import admin as connectors_router
from hypemeter.connectors.routes import ingestion as ingestion_router
from hypemeter.connectors.routes import webhooks as webhooks_router
from hypemeter.connectors.scheduler import PollScheduler
from hypemeter.connectors.service import ConnectorService
from hypemeter.connectors.websub import WebSubSubscriber
from hypemeter.control import ControlServer
from hypemeter.dashboard.routes import mount_dashboard
from hypemeter.errors import HypemeterError
from hypemeter.events.commit import CommitStep
from hypemeter.events.ports import EventStore
from hypemeter.events.preparation import ProcessPreparer
from hypemeter.events.routes import router as events_router
from hypemeter.events.service import IngestService
from hypemeter.live.config import LiveConfig
from hypemeter.live.hub import LiveHub
from hypemeter.live.ports import LiveBus
from hypemeter.live.routes import router as live_router
from hypemeter.live.streams import OpenStreams
from hypemeter.live.tokens import StreamTokens
from hypemeter.logs import RequestContextMiddleware, protect_logs
from hypemeter.metrics.cache import cached
from hypemeter.metrics.ports import MetricsStore
from hypemeter.metrics.routes import router as metrics_router
from hypemeter.metrics.service import MetricsService
from hypemeter.ops.readiness import cached_checks
from hypemeter.ops.routes import router as ops_router
from hypemeter.ops.telemetry import Telemetry
from hypemeter.privacy.model import RetentionPolicy
from hypemeter.privacy.routes import router as privacy_router
from hypemeter.privacy.service import PrivacyService
from hypemeter.registry.ports import RegistryStore
from hypemeter.registry.routes import router as registry_router
from hypemeter.registry.service import RegistryService
from hypemeter.sealing import KeySource, SealedRegistryStore
from hypemeter.settings import Settings
from hypemeter.sync import SharedConfig
from hypemeter.transport import StrictTransportSecurity

log = logging.getLogger("hypemeter")

DESCRIPTION = """Real-time engagement analytics for influencer marketing.

Authenticate every `/v1` route with `Authorization: Bearer <key>` (HTTP Basic with
the key as user name works too). Keys carry the scopes `ingest`, `read` and `admin`.
A short-lived access token from `POST /v1/oauth/token` works wherever its key does.
"""


@dataclass(slots=True)
class Services:
    """Everything a request handler may reach, built once per app."""

    settings: Settings
    store: EventStore
    tenants: TenantStore
    rollups: MetricsStore
    bus: LiveBus
    changes: ChangeFeed
    auth: AuthService
    token_issuer: TokenIssuer
    audit: AuditLog
    ingest: IngestService
    metrics: MetricsService
    live: LiveHub
    stream_tokens: StreamTokens
    rate_limiter: RateLimiter
    telemetry: Telemetry
    shared: SharedConfig
    registry_store: RegistryStore
    sealed: SealedRegistryStore  # the same store: its keys, for `hypemeter secrets rotate`
    registry: RegistryService
    connectors: ConnectorService
    privacy: PrivacyService
    pollers: PollScheduler | None
    websub: WebSubSubscriber | None
    checks: dict[str, Check]


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    backends = open_backends(settings, clock)
    # Connector secrets and credentials are encrypted in the store (``sealing``).
    sealed = SealedRegistryStore(backends.registry, KeySource.of(settings))
    shared = SharedConfig(backends.bus, refresh_seconds=config_refresh_seconds(settings))
    # Every commit made in this process is announced once, on the change feed; with a
    # bus between processes, the feed also carries commits made elsewhere (workers),
    # and the erasures and purges of every process.
    changes = ChangeFeed(None if backends.local_bus else backends.bus)
    privacy = PrivacyService(
        backends.store,
        DeadLetterArchive(sealed),
        clock,
        RetentionPolicy(settings.retention_days, settings.dead_letter_days),
        interval_s=settings.purge_interval_minutes * 60,
        first_delay_s=settings.purge_start_delay_seconds,
        changes=changes,
    )
    registry = RegistryService(
        backends.registry,
        clock,
        announce=shared.changed,
        eraser=privacy.erase,
    )
    sink = CommitStep(backends.store, changes) if backends.commits else backends.store
    # Recent hourly sums in memory, fed by the feed; the store answers the rest.
    rollups = cached(backends.metrics, changes, clock, days=settings.query_cache_days)
    ingest = IngestService(
        sink,
        backends.tenants,
        clock,
        settings.ingest_limits(),
        preparer=ProcessPreparer(settings.decode_workers) if settings.decode_workers else None,
        announce=shared.changed,
        directory=registry.directory,
    )
    connectors = ConnectorService(sealed, ingest, registry, clock, announce=shared.changed)
    metrics = MetricsService(rollups, ingest.catalog, clock, retention_days=settings.retention_days)
    tokens = access_tokens_of(settings)
    auth = AuthService(backends.tenants, clock, announce=shared.changed, tokens=tokens)
    return Services(
        settings=settings,
        store=backends.store,
        tenants=backends.tenants,
        rollups=rollups,
        bus=backends.bus,
        auth=auth,
        token_issuer=TokenIssuer(auth.authenticate, tokens, lambda: clock.now_us() // 1_000_000),
        audit=AuditLog(backends.audit, clock, retention_days=settings.audit_retention_days),
        shared=shared,
        registry_store=sealed,
        sealed=sealed,
        registry=registry,
        privacy=privacy,
        connectors=connectors,
        pollers=PollScheduler(
            connectors,
            registry,
            ingest,
            clock,
            base_urls=settings.platform_urls(),
            backoff=(settings.poll_backoff_base_seconds, settings.poll_backoff_cap_seconds),
            token_urls=settings.token_urls(),
        )
        if settings.poll_connectors
        else None,
        websub=WebSubSubscriber(
            connectors,
            registry,
            clock,
            hub_url=settings.youtube_hub_url,
            public_url=settings.public_url,
            lease_s=settings.websub_lease_seconds,
        )
        if settings.public_url and settings.poll_connectors
        else None,
        checks=cached_checks(backends.checks, clock, settings.ready_probe_seconds),
        ingest=ingest,
        metrics=metrics,
        changes=changes,
        live=LiveHub(
            changes,
            rollups,
            metrics,
            clock,
            LiveConfig(
                coalesce_s=settings.live_coalesce_ms / 1000,
                replay_s=settings.live_replay_seconds,
                queue_messages=settings.live_queue_messages,
                max_lags=settings.live_max_lags,
                heartbeat_s=settings.live_heartbeat_seconds,
                max_subscriptions=settings.live_max_subscriptions,
                token_s=settings.stream_token_seconds,
                max_channels_per_tenant=settings.live_max_channels_per_tenant,
                retention_days=settings.retention_days,
                ops_rate=settings.live_ops_rate,
                max_refused_ops=settings.live_max_refused_ops,
            ),
        ),
        stream_tokens=StreamTokens(
            backends.tenants,
            backends.bus,
            OpenStreams(settings.live_max_connections),
            per_key=settings.stream_tokens_per_key,
            lookups=settings.stream_token_lookups,
        ),
        rate_limiter=RateLimiter(
            requests=settings.rate_limit,
            events=settings.rate_limit_events,
            storage=settings.rate_limit_storage,
        ),
        telemetry=Telemetry(
            ingest.stats,
            backends.store,
            lambda: shared.reloads,
            webhooks=lambda: (connectors.delivered, connectors.refused),
        ),
    )


def config_refresh_seconds(settings: Settings) -> float:
    """Periodic reloads of shared configuration are needed only where a store is shared."""
    return 0.0 if settings.store_dsn().startswith("duckdb:") else settings.config_refresh_seconds


async def start_services(services: Services) -> None:
    # First: a store holding secrets that no configured key opens refuses to start
    # here, before anything else runs (it closes what it opened).
    await services.registry_store.start()
    await services.store.start()
    await services.tenants.start()
    await services.audit.start()
    await services.bus.start()
    await services.rollups.start()  # after the bus: the query cache follows the feed
    await services.auth.load()
    await services.ingest.start()
    await services.registry.start()
    await services.connectors.start()
    services.shared.on_change(services.auth.load)
    services.shared.on_change(services.ingest.reload_metrics)
    services.shared.on_change(services.registry.reload)
    services.shared.on_change(services.connectors.reload)
    # After the keys reload: end the live access of keys revoked elsewhere.
    services.shared.on_change(lambda: services.stream_tokens.recheck(services.auth.key_active))
    services.auth.on_revoke(services.stream_tokens.key_revoked)
    await services.shared.start()
    await services.stream_tokens.start()
    await services.live.start()
    await services.privacy.start()
    if services.pollers is not None:
        await services.pollers.start()
    if services.websub is not None:
        await services.websub.start()


async def stop_services(services: Services) -> None:
    if services.websub is not None:
        await services.websub.aclose()
    if services.pollers is not None:
        await services.pollers.aclose()
    await services.privacy.aclose()
    await services.live.aclose()
    await services.changes.aclose()
    await services.stream_tokens.aclose()
    await services.shared.aclose()
    await services.ingest.aclose()
    await services.bus.aclose()
    await services.rate_limiter.aclose()
    await services.rollups.aclose()
    await services.registry_store.aclose()
    await services.audit.aclose()
    await services.tenants.aclose()
    await services.store.aclose()


def mount_docs(app: FastAPI) -> None:
    """Swagger UI served from the installed package: no CDN is reached at run time."""
    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Hypemeter API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="data:,",
        )


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    protect_logs()  # whoever configured logging: no credential in a logged URL
    services = build_services(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await start_services(services)
        except HypemeterError as exc:
            log.error("hypemeter cannot start: %s", exc.message)  # the fix, on one line
            raise
        control = ControlServer(
            settings.control_socket(), services.auth, secrets=services.sealed, audit=services.audit
        )
        await control.start()
        log.info(
            "hypemeter ready",
            extra={"store": redacted(settings.store_dsn()), "bus": redacted(settings.bus)},
        )
        try:
            yield
        finally:
            await control.aclose()
            await stop_services(services)
            log.info("hypemeter stopped")

    app = FastAPI(
        title="Hypemeter",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    mount_docs(app)
    mount_dashboard(app)
    app.state.services = services
    app.add_exception_handler(HypemeterError, handle_hypemeter_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.include_router(ops_router)
    app.include_router(events_router)
    app.include_router(keys_router)
    app.include_router(oauth_router)
    app.include_router(audit_router)
    app.include_router(metrics_router)
    app.include_router(registry_router)  # after the queries: /v1/content/trending first
    app.include_router(connectors_router)
    app.include_router(privacy_router)
    app.include_router(ingestion_router)
    app.include_router(webhooks_router)
    app.include_router(live_router)
    app.add_middleware(AuditMiddleware, audit=services.audit)
    app.add_middleware(
        RequestContextMiddleware,
        observe=services.telemetry.observe,
        access_log=settings.access_log,
    )
    app.add_middleware(StrictTransportSecurity, max_age=settings.hsts_seconds)
    return app
