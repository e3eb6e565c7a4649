"""``GET /v1/admin/audit``: the tenant's audit log, for admin keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from hypemeter import csvfile
from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.audit import MAX_PAGE, AuditEntry, AuditQuery
from hypemeter.auth.model import Principal, Scope
from hypemeter.errors import InvalidInput
from hypemeter.metrics.model import format_instant, parse_instant

router = APIRouter(prefix="/v1/admin/audit", tags=["admin"])

COLUMNS = ["id", "at", "key_id", "action", "target_type", "target_id", "status", "ip", "fields"]
EXAMPLE = {
    "id": "01795183200000000-9f3a0c1d",
    "at": "2026-11-20T14:00:00Z",
    "key_id": "3f9a0c1d2e4b",
    "action": "influencer.update",
    "target_type": "influencer",
    "target_id": "inf-42",
    "status": 200,
    "ip": "203.0.113.7",
    "fields": ["name", "tags"],
}


def entry_view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.entry_id,
        "at": format_instant(entry.at_us),
        "key_id": entry.key_id,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "status": entry.status,
        "ip": entry.ip,
        "fields": list(entry.fields),
    }


@router.get(
    "",
    summary="This tenant's audit log, newest first: who changed what, when and from where",
    description=(
        "Every change made through the API (keys, registry, connectors, metrics, erasures) "
        "and every CSV export, and the command line's key and tenant changes. Entries hold "
        "ids and the names of the fields sent, never their values."
    ),
    responses={
        200: {
            "content": {
                "application/json": {"example": {"data": [EXAMPLE], "next_cursor": None}},
                "text/csv": {},
            }
        },
        **error_responses(400, 401, 403, 422, 429),
    },
)
async def list_audit(
    request: Request,
    principal: Annotated[Principal, Depends(require(Scope.ADMIN))],
    since: Annotated[str | None, Query(description="RFC 3339; entries at or after it")] = None,
    key_id: Annotated[str | None, Query(max_length=200, description="Who: a key id")] = None,
    action: Annotated[
        str | None, Query(max_length=200, description="e.g. key.create, influencer.erase")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    format: Annotated[str | None, Query(description="json (default) or csv")] = None,
) -> Response:
    if format not in (None, "json", "csv"):
        raise InvalidInput("format must be csv or json", field="format")
    query = AuditQuery(
        principal.tenant_id,
        since_us=parse_instant(since, "since") if since else None,
        key_id=key_id,
        action=action,
        limit=limit,
    )
    page = await request.app.state.services.audit.page(query, cursor)
    rows = [entry_view(e) for e in page.entries]
    if format != "csv":
        return json_response(request, {"data": rows, "next_cursor": page.next_cursor})
    response = Response(csvfile.to_csv(COLUMNS, rows), media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = csvfile.attachment(f"audit-{principal.tenant_id}")
    if page.next_cursor is not None:
        response.headers["X-Next-Cursor"] = page.next_cursor
    return response
