"""HTTP routes of the registry: /v1/influencers, /v1/campaigns, /v1/content.

Admin keys write, read keys read; every entity belongs to the caller's tenant.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field, field_validator

from hypemeter.api import error_responses, json_response, require
from hypemeter.auth.model import Principal, ReadNarrowing, Scope
from hypemeter.errors import InvalidInput
from hypemeter.events.model import PLATFORMS, normalize_platform
from hypemeter.registry.model import (
    ID_PATTERN,
    ID_RULE,
    MAX_PAGE,
    Account,
    Campaign,
    Content,
    Entity,
    Influencer,
    Kind,
    normalize_time,
)
from hypemeter.registry.service import RegistryService

router = APIRouter(prefix="/v1", tags=["registry"])
Reader = Annotated[Principal, Depends(require(Scope.READ))]
# Open to a read key limited to influencers (campaigns) when it names one of them.
OneInfluencer = Annotated[
    Principal, Depends(require(Scope.READ, narrowing=ReadNarrowing(influencer="influencer_id")))
]
OneCampaign = Annotated[
    Principal, Depends(require(Scope.READ, narrowing=ReadNarrowing(campaign="campaign_id")))
]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429)
READ_ERRORS = error_responses(400, 401, 403, 404, 422, 429)
RESERVED_CONTENT_IDS = {"trending"}  # /v1/content/trending is the trending query
_STAMPS = {"created_at": "2026-11-20T14:00:00.000000Z", "updated_at": "2026-11-20T14:00:00.000000Z"}
EXAMPLES: dict[str, dict[str, Any]] = {
    "influencer": {
        "id": "inf-42",
        "name": "Ana Makes",
        "tags": ["beauty"],
        "accounts": [
            {
                "platform": "instagram",
                "account_id": "17841400000000001",
                "handle": "@ana.makes",
                "followers": 184000,
            }
        ],
        **_STAMPS,
    },
    "campaign": {
        "id": "spring-launch",
        "name": "Spring launch",
        "brand": "Acme Shoes",
        "start": "2026-11-01T00:00:00.000000Z",
        "end": "2026-12-01T00:00:00.000000Z",
        "budget": 25000,
        "influencers": ["inf-42"],
        "content": ["18012345678901234"],
        "link_codes": ["ANA10"],
        **_STAMPS,
    },
    "content": {
        "id": "18012345678901234",
        "platform": "instagram",
        "influencer_id": "inf-42",
        "campaign_id": "spring-launch",
        "url": "https://www.instagram.com/p/C0abc/",
        "published_at": "2026-11-19T18:00:00.000000Z",
        "type": "reel",
        **_STAMPS,
    },
}


def documented(
    status: int, example: Any, errors: dict[int | str, dict[str, Any]]
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: the success with its example, then the errors."""
    return {
        status: {"description": "OK", "content": {"application/json": {"example": example}}},
        **errors,
    }


def _one(kind: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    return documented(status, EXAMPLES[kind], WRITE_ERRORS if status == 201 else READ_ERRORS)


def _page(kind: str) -> dict[int | str, dict[str, Any]]:
    return documented(200, {"data": [EXAMPLES[kind]], "next_cursor": None}, READ_ERRORS)


def _deleted(example_id: str, **extra: Any) -> dict[int | str, dict[str, Any]]:
    return documented(200, {"id": example_id, "deleted": True, **extra}, WRITE_ERRORS)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
EntityId = Annotated[str, Field(pattern=ID_PATTERN.pattern, description=ID_RULE)]
Name = Annotated[Text, Field(min_length=1, max_length=200)]
Label = Annotated[Text, Field(min_length=1, max_length=64)]
ContentId = Annotated[Text, Field(min_length=1, max_length=256, examples=["18012345678901234"])]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Search = Annotated[
    Text | None, Query(max_length=200, description="Case-insensitive part of a name or handle")
]
Filter = Annotated[Text | None, Query(max_length=256)]


def _platform(value: str) -> str:
    platform = normalize_platform(value)
    if platform is None:
        raise ValueError(f"unknown platform {value!r}; allowed: {', '.join(PLATFORMS)}")
    return platform


class AccountIn(BaseModel, extra="forbid"):
    platform: str = Field(examples=["instagram"])
    account_id: Text = Field(min_length=1, max_length=256, examples=["17841400000000001"])
    handle: Text | None = Field(default=None, max_length=256, examples=["@ana.makes"])
    followers: int | None = Field(default=None, ge=0, examples=[184000])

    _check_platform = field_validator("platform")(_platform)


class InfluencerFields(BaseModel, extra="forbid"):
    tags: list[Label] = Field(default_factory=list, max_length=64, examples=[["beauty"]])
    accounts: list[AccountIn] = Field(
        default_factory=list,
        max_length=50,
        examples=[[{"platform": "instagram", "account_id": "17841400000000001"}]],
    )


class InfluencerIn(InfluencerFields):
    id: EntityId = Field(examples=["inf-42"])
    name: Name = Field(examples=["Ana Makes"])


class InfluencerPatch(InfluencerFields):
    name: Name | None = Field(default=None, examples=["Ana M."])


class CampaignFields(BaseModel, extra="forbid"):
    brand: Text | None = Field(default=None, max_length=200, examples=["Acme Shoes"])
    start: dt.datetime | None = Field(default=None, examples=["2026-11-01T00:00:00Z"])
    end: dt.datetime | None = Field(default=None, examples=["2026-12-01T00:00:00Z"])
    budget: float | None = Field(default=None, ge=0, allow_inf_nan=False, examples=[25000])
    influencers: list[EntityId] = Field(
        default_factory=list, max_length=1000, examples=[["inf-42"]]
    )
    content: list[ContentId] = Field(
        default_factory=list,
        max_length=10_000,
        description="Tracked content ids",
        examples=[["18012345678901234"]],
    )
    link_codes: list[Label] = Field(default_factory=list, max_length=1000, examples=[["ANA10"]])

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        normalize_time(value)
        return value


class CampaignIn(CampaignFields):
    id: EntityId = Field(examples=["spring-launch"])
    name: Name = Field(examples=["Spring launch"])


class CampaignPatch(CampaignFields):
    name: Name | None = Field(default=None, examples=["Spring launch, extended"])


class ContentFields(BaseModel, extra="forbid"):
    campaign_id: EntityId | None = Field(default=None, examples=["spring-launch"])
    url: Text | None = Field(
        default=None, max_length=2048, examples=["https://www.instagram.com/p/C0abc/"]
    )
    published_at: dt.datetime | None = Field(default=None, examples=["2026-11-19T18:00:00Z"])
    type: Label | None = Field(default=None, examples=["reel"])

    @field_validator("published_at")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        normalize_time(value)
        return value


class ContentIn(ContentFields):
    id: ContentId
    platform: str = Field(examples=["instagram"])
    influencer_id: EntityId = Field(examples=["inf-42"])

    _check_platform = field_validator("platform")(_platform)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_CONTENT_IDS:
            raise ValueError(f"{value!r} is reserved")
        return value


class ContentPatch(ContentFields):
    platform: str | None = Field(default=None, examples=["instagram"])
    influencer_id: EntityId | None = Field(default=None, examples=["inf-42"])

    @field_validator("platform")
    @classmethod
    def _check_platform(cls, value: str | None) -> str | None:
        return None if value is None else _platform(value)


def _service(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.services.registry
    return service


def _view(entity: Entity) -> dict[str, Any]:
    view: dict[str, Any] = msgspec.to_builtins(entity)
    return view


def _changes(body: BaseModel, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields a PATCH body sets, as entity values (None clears an optional one)."""
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name in required:
            raise InvalidInput(f"{name} cannot be cleared", field=name)
        if isinstance(value, dt.datetime):
            value = normalize_time(value)
        elif isinstance(value, list):
            value = tuple(
                Account(**v.model_dump()) if isinstance(v, AccountIn) else v for v in value
            )
        changes[name] = value
    return changes


def _answer_page(request: Request, page: list[Entity], next_cursor: str | None) -> Response:
    return json_response(request, {"data": [_view(e) for e in page], "next_cursor": next_cursor})


def _filters(**given: str | None) -> dict[str, str]:
    return {name: value for name, value in given.items() if value}


# -- influencers ------------------------------------------------------------------


@router.post(
    "/influencers",
    status_code=201,
    summary="Register an influencer",
    responses=_one("influencer", 201),
)
async def create_influencer(request: Request, body: InfluencerIn, principal: Admin) -> Response:
    entity = Influencer(
        id=body.id,
        name=body.name,
        tags=tuple(body.tags),
        accounts=tuple(Account(**a.model_dump()) for a in body.accounts),
    )
    created = await _service(request).create(principal.tenant_id, entity)
    return json_response(request, _view(created), 201)


@router.get(
    "/influencers",
    summary="List influencers (filters, search, cursor)",
    responses=_page("influencer"),
)
async def list_influencers(
    request: Request,
    principal: Reader,
    tag: Filter = None,
    platform: Filter = None,
    q: Search = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    if platform is not None and normalize_platform(platform) is None:
        raise InvalidInput(f"unknown platform {platform!r}", field="platform")
    page, next_cursor = await _service(request).list(
        principal.tenant_id,
        Kind.INFLUENCER,
        filters=_filters(tag=tag, platform=platform and normalize_platform(platform)),
        search=q,
        cursor=cursor,
        limit=limit,
    )
    return _answer_page(request, page, next_cursor)


@router.get("/influencers/{influencer_id}", summary="One influencer", responses=_one("influencer"))
async def get_influencer(
    request: Request, influencer_id: str, principal: OneInfluencer
) -> Response:
    entity = await _service(request).get(principal.tenant_id, Kind.INFLUENCER, influencer_id)
    return json_response(request, _view(entity))


@router.patch(
    "/influencers/{influencer_id}",
    summary="Change an influencer",
    responses=documented(200, EXAMPLES["influencer"], WRITE_ERRORS),
)
async def patch_influencer(
    request: Request, influencer_id: str, body: InfluencerPatch, principal: Admin
) -> Response:
    changes = _changes(body, required=("name", "tags", "accounts"))
    entity = await _service(request).update(
        principal.tenant_id, Kind.INFLUENCER, influencer_id, changes
    )
    return json_response(request, _view(entity))


@router.delete(
    "/influencers/{influencer_id}",
    summary="Remove an influencer; with erase=true also their events and rollups",
    responses=_deleted("inf-42", erased_events=0),
)
async def delete_influencer(
    request: Request,
    influencer_id: str,
    principal: Admin,
    erase: Annotated[
        bool, Query(description="Also erase every event of the influencer, and its rollups")
    ] = False,
) -> Response:
    erased = await _service(request).delete(
        principal.tenant_id, Kind.INFLUENCER, influencer_id, erase=erase
    )
    return json_response(
        request, {"id": influencer_id, "deleted": True, "erased_events": erased if erase else 0}
    )


# -- campaigns --------------------------------------------------------------------


def _campaign(body: CampaignIn) -> Campaign:
    return Campaign(
        id=body.id,
        name=body.name,
        brand=body.brand,
        start=normalize_time(body.start),
        end=normalize_time(body.end),
        budget=body.budget,
        influencers=tuple(body.influencers),
        content=tuple(body.content),
        link_codes=tuple(body.link_codes),
    )


@router.post(
    "/campaigns", status_code=201, summary="Create a campaign", responses=_one("campaign", 201)
)
async def create_campaign(request: Request, body: CampaignIn, principal: Admin) -> Response:
    created = await _service(request).create(principal.tenant_id, _campaign(body))
    return json_response(request, _view(created), 201)


@router.get(
    "/campaigns", summary="List campaigns (filters, search, cursor)", responses=_page("campaign")
)
async def list_campaigns(
    request: Request,
    principal: Reader,
    brand: Filter = None,
    influencer_id: Filter = None,
    link_code: Filter = None,
    q: Search = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    page, next_cursor = await _service(request).list(
        principal.tenant_id,
        Kind.CAMPAIGN,
        filters=_filters(brand=brand, influencer_id=influencer_id, link_code=link_code),
        search=q,
        cursor=cursor,
        limit=limit,
    )
    return _answer_page(request, page, next_cursor)


@router.get("/campaigns/{campaign_id}", summary="One campaign", responses=_one("campaign"))
async def get_campaign(request: Request, campaign_id: str, principal: OneCampaign) -> Response:
    entity = await _service(request).get(principal.tenant_id, Kind.CAMPAIGN, campaign_id)
    return json_response(request, _view(entity))


@router.patch(
    "/campaigns/{campaign_id}",
    summary="Change a campaign",
    responses=documented(200, EXAMPLES["campaign"], WRITE_ERRORS),
)
async def patch_campaign(
    request: Request, campaign_id: str, body: CampaignPatch, principal: Admin
) -> Response:
    changes = _changes(body, required=("name", "influencers", "content", "link_codes"))
    entity = await _service(request).update(
        principal.tenant_id, Kind.CAMPAIGN, campaign_id, changes
    )
    return json_response(request, _view(entity))


@router.delete(
    "/campaigns/{campaign_id}", summary="Remove a campaign", responses=_deleted("spring-launch")
)
async def delete_campaign(request: Request, campaign_id: str, principal: Admin) -> Response:
    await _service(request).delete(principal.tenant_id, Kind.CAMPAIGN, campaign_id, erase=False)
    return json_response(request, {"id": campaign_id, "deleted": True})


# -- content ----------------------------------------------------------------------


@router.post(
    "/content", status_code=201, summary="Register a content item", responses=_one("content", 201)
)
async def create_content(request: Request, body: ContentIn, principal: Admin) -> Response:
    entity = Content(
        id=body.id,
        platform=body.platform,
        influencer_id=body.influencer_id,
        campaign_id=body.campaign_id,
        url=body.url,
        published_at=normalize_time(body.published_at),
        type=body.type,
    )
    created = await _service(request).create(principal.tenant_id, entity)
    return json_response(request, _view(created), 201)


@router.get(
    "/content", summary="List content (filters, search, cursor)", responses=_page("content")
)
async def list_content(
    request: Request,
    principal: Reader,
    platform: Filter = None,
    influencer_id: Filter = None,
    campaign_id: Filter = None,
    type: str | None = None,
    q: Search = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    if platform is not None and normalize_platform(platform) is None:
        raise InvalidInput(f"unknown platform {platform!r}", field="platform")
    filters = _filters(
        platform=platform and normalize_platform(platform),
        influencer_id=influencer_id,
        campaign_id=campaign_id,
        type=type,
    )
    page, next_cursor = await _service(request).list(
        principal.tenant_id, Kind.CONTENT, filters=filters, search=q, cursor=cursor, limit=limit
    )
    return _answer_page(request, page, next_cursor)


@router.get("/content/{content_id:path}", summary="One content item", responses=_one("content"))
async def get_content(request: Request, content_id: str, principal: Reader) -> Response:
    entity = await _service(request).get(principal.tenant_id, Kind.CONTENT, content_id)
    return json_response(request, _view(entity))


@router.patch(
    "/content/{content_id:path}",
    summary="Change a content item",
    responses=documented(200, EXAMPLES["content"], WRITE_ERRORS),
)
async def patch_content(
    request: Request, content_id: str, body: ContentPatch, principal: Admin
) -> Response:
    changes = _changes(body, required=("platform", "influencer_id"))
    entity = await _service(request).update(principal.tenant_id, Kind.CONTENT, content_id, changes)
    return json_response(request, _view(entity))


@router.delete(
    "/content/{content_id:path}",
    summary="Remove a content item",
    responses=_deleted("18012345678901234"),
)
async def delete_content(request: Request, content_id: str, principal: Admin) -> Response:
    await _service(request).delete(principal.tenant_id, Kind.CONTENT, content_id, erase=False)
    return json_response(request, {"id": content_id, "deleted": True})
