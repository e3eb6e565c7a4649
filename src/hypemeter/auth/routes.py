"""Admin routes for the caller's own tenant: create, list and revoke keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.model import ApiKey, Principal, Scope, parse_scopes
from hypemeter.errors import InvalidInput

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])


class LimitsIn(BaseModel, extra="forbid"):
    """What a key is narrowed to; a member left out sets no limit."""

    platforms: list[str] | None = Field(
        default=None, description="Ingest: only events of these platforms", examples=[["app"]]
    )
    metrics: list[str] | None = Field(
        default=None, description="Ingest: only events of these metrics", examples=[["clicks"]]
    )
    influencers: list[str] | None = Field(
        default=None,
        description="Ingest: only events of these influencers; read: only their numbers",
        examples=[["inf-42"]],
    )
    campaigns: list[str] | None = Field(
        default=None,
        description="Ingest: only events of these campaigns; read: only their numbers",
        examples=[["summer-drop"]],
    )
    max_value: float | None = Field(
        default=None, description="Ingest: no event's value above this (absolute)"
    )


class KeyIn(BaseModel):
    scopes: list[str] = Field(examples=[["ingest"]], description="ingest, read and/or admin")
    name: str = Field(default="", max_length=200, examples=["ios-app"])
    limits: LimitsIn | None = Field(
        default=None,
        examples=[{"influencers": ["inf-42"]}],
        description="Narrow the key (not an admin key): platforms, metrics and max_value "
        "bind ingest only; influencers and campaigns bind ingest and reads",
    )


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "name": key.name,
        "scopes": sorted(s.value for s in key.scopes),
        "created_at_us": key.created_at_us,
        "revoked": not key.active,
        "limits": key.limits.payload(),
    }


KEY_EXAMPLE = {
    "id": "3f9a0c1d2e4b",
    "name": "ios-app",
    "scopes": ["ingest"],
    "created_at_us": 1763647380000000,
    "revoked": False,
    "limits": None,
}


@router.post(
    "",
    status_code=201,
    summary="Create a key for this tenant; the secret is shown only in this answer",
    responses={
        201: {"content": {"application/json": {"example": {**KEY_EXAMPLE, "key": "hm_..."}}}},
        **error_responses(400, 401, 403, 422, 429),
    },
)
async def create_key(
    request: Request, body: KeyIn, principal: Annotated[Principal, Depends(require(Scope.ADMIN))]
) -> Response:
    try:
        scopes = parse_scopes(body.scopes)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="scopes") from exc
    limits = None if body.limits is None else body.limits.model_dump(exclude_none=True)
    new = await request.app.state.services.auth.create_key(
        principal.tenant_id, scopes, name=body.name, limits=limits
    )
    return json_response(request, {**key_view(new.record), "key": new.secret}, 201)


@router.get(
    "",
    summary="List this tenant's keys (never their secrets)",
    responses={
        200: {"content": {"application/json": {"example": {"data": [KEY_EXAMPLE]}}}},
        **error_responses(401, 403, 429),
    },
)
async def list_keys(
    request: Request, principal: Annotated[Principal, Depends(require(Scope.ADMIN))]
) -> Response:
    keys = await request.app.state.services.auth.list_keys(principal.tenant_id)
    return json_response(request, {"data": [key_view(k) for k in keys]})


@router.delete(
    "/{key_id}",
    summary="Revoke a key of this tenant; it stops working at once",
    responses={
        200: {"content": {"application/json": {"example": {**KEY_EXAMPLE, "revoked": True}}}},
        **error_responses(401, 403, 404, 422, 429),
    },
)
async def revoke_key(
    request: Request, key_id: str, principal: Annotated[Principal, Depends(require(Scope.ADMIN))]
) -> Response:
    key = await request.app.state.services.auth.revoke_key(key_id, tenant_id=principal.tenant_id)
    return json_response(request, key_view(key))
