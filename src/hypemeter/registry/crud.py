"""The five CRUD routes every registry kind has, built once by ``add_crud_routes``.

A kind says what differs through a few FastAPI dependencies: how its path names the
entity, how a body becomes an entity (or a PATCH body its changes), which filters its
list takes and who may read one entity. The routes themselves (paths, operation ids,
status codes, error mapping, replies) are the same for influencers, campaigns and
content.
"""

# Without ``from __future__ import annotations``: FastAPI reads the annotations of the
# endpoints built below at runtime, and they name this factory's arguments.

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator

from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.model import Principal, Scope
from hypemeter.errors import InvalidInput
from hypemeter.events.model import normalize_platform
from hypemeter.registry.model import MAX_PAGE, Entity, Kind
from hypemeter.registry.service import RegistryService

Responses = dict[int | str, dict[str, Any]]
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429)
READ_ERRORS = error_responses(400, 401, 403, 404, 422, 429)
Dependency = Callable[..., Any]

Reader = Annotated[Principal, Depends(require(Scope.READ))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Search = Annotated[
    Text | None, Query(max_length=200, description="Case-insensitive part of a name or handle")
]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def documented(status: int, example: Any, errors: Responses) -> Responses:
    """OpenAPI responses: the success with its example, then the errors."""
    return {
        status: {"description": "OK", "content": {"application/json": {"example": example}}},
        **errors,
    }


@dataclass(frozen=True, slots=True)
class Summaries:
    """The OpenAPI summary of each of a kind's routes."""

    create: str
    list: str
    get: str
    patch: str
    delete: str


@dataclass(frozen=True, slots=True)
class EntityRoutes:
    """What one registry kind's routes need.

    ``one`` and ``many`` name the operations (``create_<one>``, ``list_<many>``), so
    their OpenAPI operation ids stay stable. ``item_path`` names the entity's path
    parameter, which ``entity_id`` (a dependency taking that one parameter) returns.
    ``new_entity`` takes the create body and returns the entity, ``changes`` takes the
    PATCH body and returns the fields it sets, ``filters`` takes the list's filter
    parameters and returns them by name. ``reader`` authorizes reading one entity.
    ``erase``, when given, takes the delete route's parameters asking to erase the
    entity's events too and says whether they do; the reply then has ``erased_events``.
    """

    kind: Kind
    one: str
    many: str
    path: str
    item_path: str
    summaries: Summaries
    example: dict[str, Any]
    entity_id: Dependency
    new_entity: Dependency
    changes: Dependency
    filters: Dependency
    reader: Callable[[Request], Awaitable[Principal]]
    erase: Dependency | None = None


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.services.registry
    return service


def _view(entity: Entity) -> dict[str, Any]:
    view: dict[str, Any] = msgspec.to_builtins(entity)
    return view


def list_filters(given: dict[str, str | None]) -> dict[str, str]:
    """The filters a list request sets, with its platform, if any, in canonical spelling.

    Raises ``InvalidInput`` naming ``platform`` when it names no known platform.
    """
    platform = given.get("platform")
    if platform is not None:
        canonical = normalize_platform(platform)
        if canonical is None:
            raise InvalidInput(f"unknown platform {platform!r}", field="platform")
        given = {**given, "platform": canonical}
    return {name: value for name, value in given.items() if value}


@dataclass(frozen=True, slots=True)
class PageRequest:
    search: str | None
    cursor: str | None
    limit: int


def _no_erase() -> bool:
    return False


def _page_request(q: Search = None, cursor: Cursor = None, limit: Limit = 100) -> PageRequest:
    return PageRequest(search=q, cursor=cursor, limit=limit)


def add_crud_routes(router: APIRouter, spec: EntityRoutes) -> None:
    """Add ``spec``'s create, list, get, patch and delete routes to ``router``."""
    example_id = spec.example["id"]
    deleted: dict[str, Any] = {"id": example_id, "deleted": True}
    if spec.erase is not None:
        deleted["erased_events"] = 0

    async def create(
        request: Request,
        principal: Admin,
        entity: Annotated[Entity, Depends(spec.new_entity)],
    ) -> Response:
        created = await _service(request).create(principal.tenant_id, entity)
        return json_response(request, _view(created), 201)

    async def list_page(
        request: Request,
        principal: Reader,
        filters: Annotated[dict[str, str | None], Depends(spec.filters)],
        page: Annotated[PageRequest, Depends(_page_request)],
    ) -> Response:
        found, next_cursor = await _service(request).list(
            principal.tenant_id,
            spec.kind,
            filters=list_filters(filters),
            search=page.search,
            cursor=page.cursor,
            limit=page.limit,
        )
        return json_response(
            request, {"data": [_view(e) for e in found], "next_cursor": next_cursor}
        )

    async def get(
        request: Request,
        entity_id: Annotated[str, Depends(spec.entity_id)],
        principal: Annotated[Principal, Depends(spec.reader)],
    ) -> Response:
        entity = await _service(request).get(principal.tenant_id, spec.kind, entity_id)
        return json_response(request, _view(entity))

    async def patch(
        request: Request,
        entity_id: Annotated[str, Depends(spec.entity_id)],
        principal: Admin,
        changes: Annotated[dict[str, Any], Depends(spec.changes)],
    ) -> Response:
        entity = await _service(request).update(principal.tenant_id, spec.kind, entity_id, changes)
        return json_response(request, _view(entity))

    async def delete(
        request: Request,
        entity_id: Annotated[str, Depends(spec.entity_id)],
        principal: Admin,
        erase: Annotated[bool, Depends(spec.erase or _no_erase)],
    ) -> Response:
        erased = await _service(request).delete(
            principal.tenant_id, spec.kind, entity_id, erase=erase
        )
        reply: dict[str, Any] = {"id": entity_id, "deleted": True}
        if spec.erase is not None:
            reply["erased_events"] = erased if erase else 0
        return json_response(request, reply)

    summaries, example = spec.summaries, spec.example
    router.add_api_route(
        spec.path,
        create,
        methods=["POST"],
        name=f"create_{spec.one}",
        status_code=201,
        summary=summaries.create,
        responses=documented(201, example, WRITE_ERRORS),
    )
    router.add_api_route(
        spec.path,
        list_page,
        methods=["GET"],
        name=f"list_{spec.many}",
        summary=summaries.list,
        responses=documented(200, {"data": [example], "next_cursor": None}, READ_ERRORS),
    )
    item_routes: tuple[tuple[str, Callable[..., Any], str, Responses], ...] = (
        ("GET", get, summaries.get, documented(200, example, READ_ERRORS)),
        ("PATCH", patch, summaries.patch, documented(200, example, WRITE_ERRORS)),
        ("DELETE", delete, summaries.delete, documented(200, deleted, WRITE_ERRORS)),
    )
    for method, endpoint, summary, responses in item_routes:
        router.add_api_route(
            spec.item_path,
            endpoint,
            methods=[method],
            name=f"{method.lower()}_{spec.one}",
            summary=summary,
            responses=responses,
        )
