"""Admin routes for the caller's own tenant: create, list and revoke keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.model import ApiKey, Principal, Scope, parse_scopes
from hypemeter.errors import InvalidInput

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])


class KeyIn(BaseModel):
    scopes: list[str] = Field(examples=[["ingest"]], description="ingest, read and/or admin")
    name: str = Field(default="", max_length=200, examples=["ios-app"])


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "name": key.name,
        "scopes": sorted(s.value for s in key.scopes),
        "created_at_us": key.created_at_us,
        "revoked": not key.active,
    }


KEY_EXAMPLE = {
    "id": "3f9a0c1d2e4b",
    "name": "ios-app",
    "scopes": ["ingest"],
    "created_at_us": 1763647380000000,
    "revoked": False,
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
    new = await request.app.state.services.auth.create_key(
        principal.tenant_id, scopes, name=body.name
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
