"""HTTP routes of ingest: POST /v1/events, POST /v1/track/{metric}, custom metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.model import Principal, Scope
from hypemeter.errors import (
    BatchRejected,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from hypemeter.events.model import BUILTIN_METRICS, MAX_CUSTOM_METRICS
from hypemeter.events.service import IngestResult
from hypemeter.events.value_limits import LimitChange, MetricValueLimit

router = APIRouter(prefix="/v1", tags=["ingest"])

EXAMPLE_EVENT = {
    "event_id": "ig-cmt-17895695668004550",
    "influencer_id": "inf-42",
    "platform": "instagram",
    "content_id": "post-9001",
    "campaign_id": "summer-drop",
    "metric": "comments",
    "value": 1,
    "ts": "2026-11-20T14:03:00Z",
    "user_id": "fan-77",
    "text": "love this!",
    "tags": ["giveaway"],
}


class RejectedItem(BaseModel):
    index: int = Field(description="Position in the JSON array, or 0-based NDJSON line")
    field: str | None = Field(description="The offending field, when one is to blame")
    error: str


class IngestReply(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[RejectedItem]


class MetricIn(BaseModel):
    name: str = Field(examples=["story_replies"])
    kind: str = Field(default="counter", examples=["counter"], description="counter or gauge")


INGEST_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "model": IngestReply,
        "description": "Accepted events are committed durably before this answer",
        "content": {
            "application/json": {
                "example": {
                    "accepted": 2,
                    "duplicates": 1,
                    "rejected": [{"index": 3, "field": "ts", "error": "ts is more than ..."}],
                }
            }
        },
    }
}

BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A JSON array of events, or NDJSON (one event per line); gzip allowed",
        "content": {
            "application/json": {"example": [EXAMPLE_EVENT]},
            "application/x-ndjson": {
                "example": '{"influencer_id":"inf-42","platform":"tiktok","metric":"likes",'
                '"ts":"2026-11-20T14:03:00Z"}\n'
            },
        },
    }
}

TRACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "example": {
                    "influencer_id": "inf-42",
                    "content_id": "promo-video-1",
                    "user_id": "device-8f2",
                    "event_id": "7a4c9f0e-click-1",
                }
            }
        },
    }
}


async def read_body(request: Request, limit: int, limit_name: str) -> bytes:
    """The raw body, refusing anything over ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"body of {declared} bytes exceeds {limit_name} ({limit})",
            limit=limit_name,
            value=limit,
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"body exceeds {limit_name} ({limit})", limit=limit_name, value=limit
            )
        chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def refusals_noted(request: Request, tenant_id: str) -> Iterator[None]:
    """Note a request refused as a whole (over a limit, unreadable, of an unknown type)
    among the tenant's recent rejections; a batch whose events were all rejected is
    noted event by event by the service."""
    try:
        yield
    except BatchRejected:
        raise
    except (InvalidInput, PayloadTooLarge, UnsupportedMediaType) as exc:
        name = exc.field or getattr(exc, "limit", None)
        request.app.state.services.ingest.stats.refused(tenant_id, name, exc.message)
        raise


def reply(request: Request, result: IngestResult) -> Response:
    return json_response(
        request,
        {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": [
                {"index": r.index, "field": r.field, "error": r.error} for r in result.rejected
            ],
        },
    )


@router.post(
    "/events",
    summary="Ingest a batch of events (JSON array or NDJSON, optionally gzip)",
    responses={**INGEST_OK, **error_responses(400, 401, 403, 413, 415, 429, 503)},
    openapi_extra=BATCH_BODY,
)
async def ingest_events(
    request: Request, principal: Annotated[Principal, Depends(require(Scope.INGEST))]
) -> Response:
    services = request.app.state.services
    with refusals_noted(request, principal.tenant_id):
        body = await read_body(request, services.settings.max_body_bytes, "max_body_bytes")
        result = await services.ingest.ingest(
            principal.tenant_id,
            body,
            content_type=request.headers.get("content-type"),
            content_encoding=request.headers.get("content-encoding"),
            quota=partial(services.rate_limiter.hit_events, principal.key_id),
            limits=principal.limits,
        )
    return reply(request, result)


@router.post(
    "/track/{metric}",
    summary="Ingest one in-app SDK event; the metric comes from the path",
    description="`ts` defaults to the receive time and `platform` to `app`. "
    "Examples: `/v1/track/click`, `/v1/track/video-view`.",
    responses={**INGEST_OK, **error_responses(400, 401, 403, 413, 415, 422, 429, 503)},
    openapi_extra=TRACK_BODY,
)
async def track(
    request: Request,
    metric: str,
    principal: Annotated[Principal, Depends(require(Scope.INGEST))],
) -> Response:
    services = request.app.state.services
    with refusals_noted(request, principal.tenant_id):
        body = await read_body(request, services.settings.max_event_bytes, "max_event_bytes")
        result = await services.ingest.track(
            principal.tenant_id,
            metric,
            body,
            content_encoding=request.headers.get("content-encoding"),
            quota=partial(services.rate_limiter.hit_events, principal.key_id),
            limits=principal.limits,
        )
    return reply(request, result)


@router.post(
    "/admin/metrics",
    status_code=201,
    summary="Register a custom metric for this tenant",
    tags=["admin"],
    responses={
        201: {
            "content": {
                "application/json": {"example": {"name": "story_replies", "kind": "counter"}}
            }
        },
        **error_responses(400, 401, 403, 409, 422, 429),
    },
)
async def register_metric(
    request: Request,
    body: MetricIn,
    principal: Annotated[Principal, Depends(require(Scope.ADMIN))],
) -> Response:
    services = request.app.state.services
    metric = await services.ingest.register_metric(principal.tenant_id, body.name, body.kind)
    return json_response(request, {"name": metric.name, "kind": metric.kind.value}, 201)


@router.get(
    "/admin/metrics",
    summary="The metrics this tenant may send: built-in and custom",
    tags=["admin"],
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {"builtin": ["likes"], "custom": [{"name": "x", "kind": "counter"}]}
                }
            }
        },
        **error_responses(401, 403, 429),
    },
)
async def list_metrics(
    request: Request, principal: Annotated[Principal, Depends(require(Scope.ADMIN))]
) -> Response:
    catalog = request.app.state.services.ingest.catalog(principal.tenant_id)
    return json_response(
        request,
        {
            "builtin": [{"name": n, "kind": k.value} for n, k in BUILTIN_METRICS.items()],
            "custom": [{"name": n, "kind": k.value} for n, k in sorted(catalog.custom.items())],
        },
    )


class ValueLimitIn(BaseModel, extra="forbid"):
    max_delta: float | None = Field(
        default=None, description="Largest increment (kind delta), in absolute value"
    )
    max_snapshot: float | None = Field(
        default=None, description="Largest cumulative reading (kind snapshot)"
    )


class ValueLimitsIn(BaseModel, extra="forbid"):
    metrics: dict[str, ValueLimitIn | None] = Field(
        max_length=MAX_CUSTOM_METRICS + len(BUILTIN_METRICS),
        description="metric -> new bounds (a member left out is kept); null restores the defaults",
        examples=[{"conversions": {"max_delta": 5000}, "likes": None}],
    )


VALUE_LIMITS_EXAMPLE = {
    "metrics": {"conversions": {"max_delta": 5000.0, "max_snapshot": 1e10, "default": False}}
}


def value_limits_view(limits: list[MetricValueLimit]) -> dict[str, Any]:
    return {
        "metrics": {
            item.metric: {
                "max_delta": item.limit.max_delta,
                "max_snapshot": item.limit.max_snapshot,
                "default": item.default,
            }
            for item in limits
        }
    }


@router.get(
    "/admin/value-limits",
    summary="The largest value one event may carry, per metric",
    tags=["admin"],
    responses={
        200: {"content": {"application/json": {"example": VALUE_LIMITS_EXAMPLE}}},
        **error_responses(401, 403, 429),
    },
)
async def get_value_limits(
    request: Request, principal: Annotated[Principal, Depends(require(Scope.ADMIN))]
) -> Response:
    ingest = request.app.state.services.ingest
    limits = ingest.value_limits.view(principal.tenant_id, ingest.catalog(principal.tenant_id))
    return json_response(request, value_limits_view(limits))


@router.put(
    "/admin/value-limits",
    summary="Change this tenant's bounds on event values; events above them are rejected",
    tags=["admin"],
    responses={
        200: {"content": {"application/json": {"example": VALUE_LIMITS_EXAMPLE}}},
        **error_responses(400, 401, 403, 422, 429),
    },
)
async def put_value_limits(
    request: Request,
    body: ValueLimitsIn,
    principal: Annotated[Principal, Depends(require(Scope.ADMIN))],
) -> Response:
    ingest = request.app.state.services.ingest
    changes = {
        metric: None if change is None else LimitChange(change.max_delta, change.max_snapshot)
        for metric, change in body.metrics.items()
    }
    limits = await ingest.value_limits.change(
        principal.tenant_id, ingest.catalog(principal.tenant_id), changes
    )
    return json_response(request, value_limits_view(limits))
