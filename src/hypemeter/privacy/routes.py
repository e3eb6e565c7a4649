"""HTTP route of retention (admin scope): what is kept, for how long, and the last purge."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.model import Principal, Scope
from hypemeter.metrics.model import format_instant
from hypemeter.privacy.service import PrivacyService

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]

RETENTION_EXAMPLE = {
    "retention_days": 400,
    "dead_letter_days": 30,
    "purge_interval_minutes": 60.0,
    "events_before": "2025-10-16T00:00:00Z",
    "last_purge": {
        "started_at": "2026-11-20T14:00:00Z",
        "finished_at": "2026-11-20T14:00:01.250000Z",
        "events_before": "2025-10-16T00:00:00Z",
        "events": 1204,
        "dead_letters": 3,
    },
}


@router.get(
    "/retention",
    summary="What is kept and for how long, and this process's last purge",
    description="Events older than the retention are purged whole UTC days at a time "
    "(events_before is the current cutoff), but for each snapshot series's newest "
    "reading before it; dead letters dead_letter_days after they were received or last "
    "replayed. last_purge counts this tenant's deletions of the last pass this API "
    "process finished (null until its first pass, at start-up, is done).",
    responses={
        200: {"description": "OK", "content": {"application/json": {"example": RETENTION_EXAMPLE}}},
        **error_responses(401, 403, 429),
    },
)
async def retention(request: Request, principal: Admin) -> Response:
    service: PrivacyService = request.app.state.services.privacy
    now = service.now_us()
    last = service.last
    report: dict[str, Any] | None = None
    if last is not None:
        report = {
            "started_at": format_instant(last.started_us),
            "finished_at": format_instant(last.finished_us),
            "events_before": format_instant(last.cutoff_us),
            "events": last.events.get(principal.tenant_id, 0),
            "dead_letters": last.dead_letters.get(principal.tenant_id, 0),
        }
    return json_response(
        request,
        {
            "retention_days": service.policy.retention_days,
            "dead_letter_days": service.policy.dead_letter_days,
            "purge_interval_minutes": service.interval_s / 60,
            "events_before": format_instant(service.policy.events_cutoff(now)),
            "last_purge": report,
        },
    )
