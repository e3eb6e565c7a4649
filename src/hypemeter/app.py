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
from hypemeter.auth.ratelimit import RateLimiter
from hypemeter.auth.routes import router as keys_router
from hypemeter.auth.service import AuthService
from hypemeter.backends.dsn import redacted
from hypemeter.backends.ports import EventStore, LiveBus, MetricsStore, RegistryStore, TenantStore
from hypemeter.backends.selection import Check, open_backends
from hypemeter.clock import Clock, SystemClock
from hypemeter.connectors.pollers import PollScheduler
from hypemeter.connectors.routes import admin as connectors_router
from hypemeter.connectors.routes import ingestion as ingestion_router
from hypemeter.connectors.routes import webhooks as webhooks_router
from hypemeter.connectors.service import ConnectorService
from hypemeter.connectors.websub import WebSubSubscriber
from hypemeter.control import ControlServer
from hypemeter.dashboard.routes import mount_dashboard
from hypemeter.errors import HypemeterError
from hypemeter.events.preparation import ProcessPreparer
from hypemeter.events.routes import router as events_router
from hypemeter.events.service import IngestService
from hypemeter.live.hub import LiveConfig, LiveHub
from hypemeter.live.routes import router as live_router
from hypemeter.live.tokens import StreamTokens
from hypemeter.logs import RequestContextMiddleware
from hypemeter.metrics.routes import router as metrics_router
from hypemeter.metrics.service import MetricsService
from hypemeter.ops.routes import router as ops_router
from hypemeter.ops.telemetry import Telemetry
from hypemeter.registry.routes import router as registry_router
from hypemeter.registry.service import RegistryService
from hypemeter.settings import Settings
from hypemeter.sync import SharedConfig

log = logging.getLogger("hypemeter")

DESCRIPTION = """Real-time engagement analytics for influencer marketing.

Authenticate every `/v1` route with `Authorization: Bearer <key>` (HTTP Basic with
the key as user name works too). Keys carry the scopes `ingest`, `read` and `admin`.
"""


@dataclass(slots=True)
class Services:
    """Everything a request handler may reach, built once per app."""

    settings: Settings
    store: EventStore
    tenants: TenantStore
    rollups: MetricsStore
    bus: LiveBus
    auth: AuthService
    ingest: IngestService
    metrics: MetricsService
    live: LiveHub
    stream_tokens: StreamTokens
    rate_limiter: RateLimiter
    telemetry: Telemetry
    shared: SharedConfig
    registry_store: RegistryStore
    registry: RegistryService
    connectors: ConnectorService
    pollers: PollScheduler | None
    websub: WebSubSubscriber | None
    checks: dict[str, Check]


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    backends = open_backends(settings, clock)
    shared = SharedConfig(backends.bus, refresh_seconds=config_refresh_seconds(settings))
    registry = RegistryService(
        backends.registry,
        clock,
        announce=shared.changed,
        eraser=backends.store.erase_influencer,
    )
    ingest = IngestService(
        backends.store,
        backends.tenants,
        backends.bus,
        clock,
        settings.ingest_limits(),
        preparer=ProcessPreparer(settings.decode_workers) if settings.decode_workers else None,
        announce=shared.changed,
        directory=registry.directory,
    )
    connectors = ConnectorService(
        backends.registry, ingest, registry, clock, announce=shared.changed
    )
    metrics = MetricsService(
        backends.metrics, ingest.catalog, clock, retention_days=settings.retention_days
    )
    return Services(
        settings=settings,
        store=backends.store,
        tenants=backends.tenants,
        rollups=backends.metrics,
        bus=backends.bus,
        auth=AuthService(backends.tenants, clock, announce=shared.changed),
        shared=shared,
        registry_store=backends.registry,
        registry=registry,
        connectors=connectors,
        pollers=PollScheduler(
            connectors,
            registry,
            ingest,
            clock,
            base_urls=settings.platform_urls(),
            backoff=(settings.poll_backoff_base_seconds, settings.poll_backoff_cap_seconds),
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
        checks=backends.checks,
        ingest=ingest,
        metrics=metrics,
        live=LiveHub(
            backends.bus,
            backends.metrics,
            metrics,
            clock,
            LiveConfig(
                coalesce_s=settings.live_coalesce_ms / 1000,
                replay_s=settings.live_replay_seconds,
                queue_messages=settings.live_queue_messages,
                max_lags=settings.live_max_lags,
                heartbeat_s=settings.live_heartbeat_seconds,
                max_connections=settings.live_max_connections,
                max_subscriptions=settings.live_max_subscriptions,
                token_s=settings.stream_token_seconds,
            ),
        ),
        stream_tokens=StreamTokens(backends.tenants, backends.bus),
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
    await services.store.start()
    await services.tenants.start()
    await services.rollups.start()
    await services.registry_store.start()
    await services.bus.start()
    await services.auth.load()
    await services.ingest.start()
    await services.registry.start()
    await services.connectors.start()
    services.shared.on_change(services.auth.load)
    services.shared.on_change(services.ingest.reload_metrics)
    services.shared.on_change(services.registry.reload)
    services.shared.on_change(services.connectors.reload)
    await services.shared.start()
    await services.stream_tokens.start()
    await services.live.start()
    if services.pollers is not None:
        await services.pollers.start()
    if services.websub is not None:
        await services.websub.start()


async def stop_services(services: Services) -> None:
    if services.websub is not None:
        await services.websub.aclose()
    if services.pollers is not None:
        await services.pollers.aclose()
    await services.live.aclose()
    await services.stream_tokens.aclose()
    await services.shared.aclose()
    await services.ingest.aclose()
    await services.bus.aclose()
    await services.rate_limiter.aclose()
    await services.rollups.aclose()
    await services.registry_store.aclose()
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
    services = build_services(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_services(services)
        control = ControlServer(settings.control_socket(), services.auth)
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
    app.include_router(metrics_router)
    app.include_router(registry_router)  # after the queries: /v1/content/trending first
    app.include_router(connectors_router)
    app.include_router(ingestion_router)
    app.include_router(webhooks_router)
    app.include_router(live_router)
    app.add_middleware(
        RequestContextMiddleware,
        observe=services.telemetry.observe,
        access_log=settings.access_log,
    )
    return app
