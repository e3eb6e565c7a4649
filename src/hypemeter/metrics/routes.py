"""HTTP routes of the query API (read scope) and of EMV unit values (admin scope)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from hypemeter import csvfile
from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.model import Principal, ReadNarrowing, Scope
from hypemeter.errors import InvalidInput
from hypemeter.events.model import PLATFORMS, normalize_platform
from hypemeter.metrics import render
from hypemeter.metrics.examples import (
    AGGREGATE_EXAMPLE,
    CAMPAIGN_EXAMPLE,
    EMV_EXAMPLE,
    LEADERBOARD_EXAMPLE,
    SERIES_EXAMPLE,
    TENANT_EXAMPLE,
    TRENDING_EXAMPLE,
    USERS_EXAMPLE,
)
from hypemeter.metrics.queries import Filters
from hypemeter.metrics.service import MetricsService, RangeParams

router = APIRouter(prefix="/v1", tags=["queries"])
Reader = Annotated[Principal, Depends(require(Scope.READ))]
# Routes that name the influencer and/or campaign they read (in the path or the query),
# open to a read key limited to some of them: see ``ReadNarrowing``.
ByInfluencer = Annotated[
    Principal,
    Depends(
        require(
            Scope.READ,
            narrowing=ReadNarrowing(influencer="influencer_id", campaign="campaign_id"),
        )
    ),
]
ByCampaign = Annotated[
    Principal, Depends(require(Scope.READ, narrowing=ReadNarrowing(campaign="campaign_id")))
]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
ERRORS = error_responses(400, 401, 403, 422, 429)

Start = Annotated[
    str | None,
    Query(description="RFC 3339, inclusive", examples=["2026-11-20T00:00:00Z"]),
]
End = Annotated[str | None, Query(description="RFC 3339, exclusive")]
Period = Annotated[
    str | None,
    Query(
        description="Instead of start/end: the last 1h, 24h, 7d, 30d... up to the current "
        "minute's end",
        examples=["7d"],
    ),
]
Granularity = Annotated[str, Query(description="minute, hour, day or auto (<= ~500 buckets)")]
Metrics = Annotated[
    str,
    Query(description="Comma-separated stored or derived metrics", examples=["likes,comments"]),
]
Platform = Annotated[str | None, Query(description="Only this platform")]
Campaign = Annotated[str | None, Query(description="Only events carrying this campaign_id")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
Format = Annotated[str | None, Query(description="csv for CSV (or send Accept: text/csv)")]


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """The query parameters every series route takes."""

    params: RangeParams
    metrics: str
    platform: str | None
    granularity: str
    format: str | None


async def series_query(
    start: Start = None,
    end: End = None,
    period: Period = None,
    metrics: Metrics = "likes,comments,shares",
    platform: Platform = None,
    granularity: Granularity = "auto",
    format: Format = None,
) -> SeriesQuery:
    return SeriesQuery(
        RangeParams(start, end, period), metrics, _platform(platform), granularity, format
    )


Series = Annotated[SeriesQuery, Depends(series_query)]


def _service(request: Request) -> MetricsService:
    service: MetricsService = request.app.state.services.metrics
    return service


def _platform(value: str | None) -> str | None:
    if value is None:
        return None
    platform = normalize_platform(value)
    if platform is None:
        raise InvalidInput(
            f"unknown platform {value!r}; allowed: {', '.join(PLATFORMS)}", field="platform"
        )
    return platform


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        if fmt not in {"csv", "json"}:
            raise InvalidInput("format must be csv or json", field="format")
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


def _reply(
    request: Request,
    payload: dict[str, Any],
    fmt: str | None,
    name: str,
    columns: list[str] | None = None,
) -> Response:
    if not _wants_csv(request, fmt):
        return json_response(request, payload)
    response = Response(render.to_csv(payload, columns), media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = csvfile.attachment(name)
    stats = payload["statistics"]
    response.headers["X-Elapsed-Ms"] = str(stats["elapsed_ms"])
    response.headers["X-Rows-Read"] = str(stats["rows_read"])
    return response


def _ok(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": example}}}, **ERRORS}


@router.get(
    "/influencers/{influencer_id}/metrics",
    summary="Per-bucket series and totals of one influencer",
    responses=_ok(SERIES_EXAMPLE),
)
async def influencer_metrics(
    request: Request,
    influencer_id: str,
    principal: ByInfluencer,
    query: Series,
    campaign_id: Campaign = None,
) -> Response:
    answer = await _service(request).series(
        principal.tenant_id,
        filters=Filters(influencer_id, query.platform, campaign_id),
        params=query.params,
        metrics=query.metrics,
        granularity=query.granularity,
    )
    payload = render.series_body(answer, {"influencer_id": influencer_id})
    return _reply(request, payload, query.format, f"influencer-{influencer_id}")


@router.get(
    "/campaigns/{campaign_id}/metrics",
    summary="Series and totals of one campaign, with a per-influencer breakdown",
    responses=_ok(CAMPAIGN_EXAMPLE),
)
async def campaign_metrics(
    request: Request, campaign_id: str, principal: ByCampaign, query: Series
) -> Response:
    answer = await _service(request).series(
        principal.tenant_id,
        filters=Filters(None, query.platform, campaign_id),
        params=query.params,
        metrics=query.metrics,
        granularity=query.granularity,
        breakdown=True,
    )
    payload = render.series_body(answer, {"campaign_id": campaign_id})
    return _reply(request, payload, query.format, f"campaign-{campaign_id}")


@router.get(
    "/metrics/series",
    summary="Per-bucket series and totals of the whole tenant",
    description="As the influencer series, over every event of the tenant (or of one "
    "platform or campaign); the dashboard's overview reads it.",
    responses=_ok(TENANT_EXAMPLE),
)
async def tenant_metrics(
    request: Request, principal: ByCampaign, query: Series, campaign_id: Campaign = None
) -> Response:
    answer = await _service(request).series(
        principal.tenant_id,
        filters=Filters(None, query.platform, campaign_id),
        params=query.params,
        metrics=query.metrics,
        granularity=query.granularity,
    )
    payload = render.series_body(answer, {})
    return _reply(request, payload, query.format, "tenant")


@router.get(
    "/metrics/aggregate",
    summary="One metric grouped by platform, influencer, campaign, content or day",
    responses=_ok(AGGREGATE_EXAMPLE),
)
async def aggregate(
    request: Request,
    principal: ByInfluencer,
    metric: Annotated[str, Query(description="A stored or derived metric")],
    group_by: Annotated[str, Query(description="platform, influencer, campaign, content, day")],
    start: Start = None,
    end: End = None,
    period: Period = None,
    platform: Platform = None,
    campaign_id: Campaign = None,
    influencer_id: Annotated[str | None, Query(description="Only this influencer")] = None,
    sort: Annotated[str, Query(description="-value (default), value, key, -key")] = "-value",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
    format: Format = None,
) -> Response:
    page = await _service(request).aggregate(
        principal.tenant_id,
        metric=metric,
        group_by=group_by,
        params=RangeParams(start, end, period),
        filters=Filters(influencer_id, _platform(platform), campaign_id),
        sort=sort,
        limit=limit,
        cursor=cursor,
    )
    payload = render.aggregate_body(page)
    return _reply(request, payload, format, f"aggregate-{group_by}", render.AGGREGATE_COLUMNS)


@router.get(
    "/content/trending",
    summary="Content items by total engagement over the last hours",
    responses=_ok(TRENDING_EXAMPLE),
)
async def trending(
    request: Request,
    principal: Reader,
    hours_back: Annotated[int, Query(ge=1)] = 24,
    platform: Platform = None,
    min_interactions: Annotated[int, Query(ge=0)] = 10,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Cursor = None,
    format: Format = None,
) -> Response:
    page = await _service(request).trending(
        principal.tenant_id,
        hours_back=hours_back,
        platform=_platform(platform),
        min_interactions=min_interactions,
        limit=limit,
        cursor=cursor,
    )
    payload = render.trending_body(page)
    return _reply(request, payload, format, "trending", render.TRENDING_COLUMNS)


@router.get(
    "/users/activity",
    summary="Audience users by total engagement since a time",
    responses=_ok(USERS_EXAMPLE),
)
async def user_activity(
    request: Request,
    principal: Reader,
    since: Annotated[str | None, Query(description="RFC 3339; default 24 hours ago")] = None,
    min_engagement: Annotated[float, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
    format: Format = None,
) -> Response:
    page = await _service(request).user_activity(
        principal.tenant_id,
        since=since,
        min_engagement=min_engagement,
        limit=limit,
        cursor=cursor,
    )
    payload = render.user_activity_body(page)
    return _reply(request, payload, format, "users", render.USER_COLUMNS)


@router.get(
    "/leaderboard",
    summary="Influencers ranked by any metric, derived ones included",
    responses=_ok(LEADERBOARD_EXAMPLE),
)
async def leaderboard(
    request: Request,
    principal: Reader,
    metric: Annotated[str, Query(description="A stored or derived metric")] = "engagement",
    period: Period = None,
    start: Start = None,
    end: End = None,
    platform: Platform = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    cursor: Cursor = None,
    format: Format = None,
) -> Response:
    page = await _service(request).leaderboard(
        principal.tenant_id,
        metric=metric,
        params=RangeParams(start, end, period),
        platform=_platform(platform),
        limit=limit,
        cursor=cursor,
    )
    payload = render.leaderboard_body(page)
    return _reply(request, payload, format, "leaderboard", render.LEADERBOARD_COLUMNS)


class EmvRatesIn(BaseModel):
    rates: dict[str, dict[str, float | None]] = Field(
        description="platform -> metric -> value per unit; null restores the default",
        examples=[{"instagram": {"likes": 0.12, "views": None}}],
    )


@router.get(
    "/admin/emv",
    summary="Earned media value per unit",
    tags=["admin"],
    responses=_ok(EMV_EXAMPLE),
)
async def get_emv(request: Request, principal: Admin) -> Response:
    table = await _service(request).emv_rates(principal.tenant_id)
    return json_response(request, render.emv_body(table))


@router.put(
    "/admin/emv",
    summary="Set this tenant's earned media value per unit (platform, metric)",
    tags=["admin"],
    responses=_ok(EMV_EXAMPLE),
)
async def put_emv(request: Request, body: EmvRatesIn, principal: Admin) -> Response:
    table = await _service(request).set_emv_rates(principal.tenant_id, body.rates)
    return json_response(request, render.emv_body(table))
