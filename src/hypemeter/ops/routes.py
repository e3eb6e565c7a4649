"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from hypemeter.api import bearer_secret, error_responses, json_response
from hypemeter.auth.model import Scope, same_secret
from hypemeter.errors import StoreUnavailable

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Liveness: the process answers",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def healthz(request: Request) -> Response:
    return json_response(request, {"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: every backend answers (store writable, event log, live bus)",
    description="Needs no key. The store's write check runs at most once per "
    "ready_probe_seconds (default 5); calls in between repeat its last outcome.",
    responses={
        200: {
            "content": {
                "application/json": {"example": {"status": "ready", "store": "ok", "bus": "ok"}}
            }
        },
        503: {
            "description": "The store cannot be written",
            "content": {
                "application/json": {"example": {"status": "unavailable", "store": "disk full"}}
            },
        },
    },
)
async def readyz(request: Request) -> Response:
    report: dict[str, str] = {}
    for name, check in request.app.state.services.checks.items():
        try:
            await check()
        except StoreUnavailable as exc:
            report[name] = exc.message
        else:
            report[name] = "ok"
    if any(state != "ok" for state in report.values()):
        response = json_response(request, {"status": "unavailable", **report}, 503)
        response.headers["Retry-After"] = "5"
        return response
    return json_response(request, {"status": "ready", **report})


@router.get(
    "/metrics",
    summary="Prometheus metrics (admin key, or the configured scrape token)",
    responses={
        200: {"content": {"text/plain": {"example": "hypemeter_events_accepted_total 42.0\n"}}},
        **error_responses(401, 403),
    },
)
async def metrics(request: Request) -> Response:
    services = request.app.state.services
    secret = bearer_secret(request)
    token = services.settings.metrics_token
    if secret and token is not None and same_secret(secret, token.get_secret_value()):
        tenant_id = None
    else:
        principal = services.auth.authenticate(secret)
        services.auth.authorize(principal, Scope.ADMIN)
        tenant_id = principal.tenant_id
    return Response(services.telemetry.render(tenant_id), media_type=CONTENT_TYPE_LATEST)
