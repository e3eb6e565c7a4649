"""HTTP routes of the registry: /v1/influencers, /v1/campaigns, /v1/content.

Admin keys write, read keys read; every entity belongs to the caller's tenant.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator

from hypemeter.api import require
from hypemeter.auth.model import ReadNarrowing, Scope
from hypemeter.errors import InvalidInput
from hypemeter.events.model import PLATFORMS, normalize_platform
from hypemeter.registry.crud import EntityRoutes, Summaries, Text, add_crud_routes
from hypemeter.registry.model import (
    ID_PATTERN,
    ID_RULE,
    Account,
    Campaign,
    Content,
    Influencer,
    Kind,
    normalize_time,
)

router = APIRouter(prefix="/v1", tags=["registry"])
# Open to a read key limited to influencers (campaigns) when it names one of them.
one_influencer = require(Scope.READ, narrowing=ReadNarrowing(influencer="influencer_id"))
one_campaign = require(Scope.READ, narrowing=ReadNarrowing(campaign="campaign_id"))
any_reader = require(Scope.READ)
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


EntityId = Annotated[str, Field(pattern=ID_PATTERN.pattern, description=ID_RULE)]
Name = Annotated[Text, Field(min_length=1, max_length=200)]
Label = Annotated[Text, Field(min_length=1, max_length=64)]
ContentId = Annotated[Text, Field(min_length=1, max_length=256, examples=["18012345678901234"])]
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


# -- influencers ------------------------------------------------------------------


def _influencer_id(influencer_id: str) -> str:
    return influencer_id


def _new_influencer(body: InfluencerIn) -> Influencer:
    return Influencer(
        id=body.id,
        name=body.name,
        tags=tuple(body.tags),
        accounts=tuple(Account(**a.model_dump()) for a in body.accounts),
    )


def _influencer_changes(body: InfluencerPatch) -> dict[str, Any]:
    return _changes(body, required=("name", "tags", "accounts"))


def _influencer_erase(
    erase: Annotated[
        bool, Query(description="Also erase every event of the influencer, and its rollups")
    ] = False,
) -> bool:
    return erase


def _influencer_filters(tag: Filter = None, platform: Filter = None) -> dict[str, str | None]:
    return {"tag": tag, "platform": platform}


add_crud_routes(
    router,
    EntityRoutes(
        kind=Kind.INFLUENCER,
        one="influencer",
        many="influencers",
        path="/influencers",
        item_path="/influencers/{influencer_id}",
        summaries=Summaries(
            create="Register an influencer",
            list="List influencers (filters, search, cursor)",
            get="One influencer",
            patch="Change an influencer",
            delete="Remove an influencer; with erase=true also their events and rollups",
        ),
        example=EXAMPLES["influencer"],
        entity_id=_influencer_id,
        new_entity=_new_influencer,
        changes=_influencer_changes,
        filters=_influencer_filters,
        reader=one_influencer,
        erase=_influencer_erase,
    ),
)


# -- campaigns --------------------------------------------------------------------


def _campaign_id(campaign_id: str) -> str:
    return campaign_id


def _new_campaign(body: CampaignIn) -> Campaign:
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


def _campaign_changes(body: CampaignPatch) -> dict[str, Any]:
    return _changes(body, required=("name", "influencers", "content", "link_codes"))


def _campaign_filters(
    brand: Filter = None, influencer_id: Filter = None, link_code: Filter = None
) -> dict[str, str | None]:
    return {"brand": brand, "influencer_id": influencer_id, "link_code": link_code}


add_crud_routes(
    router,
    EntityRoutes(
        kind=Kind.CAMPAIGN,
        one="campaign",
        many="campaigns",
        path="/campaigns",
        item_path="/campaigns/{campaign_id}",
        summaries=Summaries(
            create="Create a campaign",
            list="List campaigns (filters, search, cursor)",
            get="One campaign",
            patch="Change a campaign",
            delete="Remove a campaign",
        ),
        example=EXAMPLES["campaign"],
        entity_id=_campaign_id,
        new_entity=_new_campaign,
        changes=_campaign_changes,
        filters=_campaign_filters,
        reader=one_campaign,
    ),
)


# -- content ----------------------------------------------------------------------


def _content_id(content_id: str) -> str:
    return content_id


def _new_content(body: ContentIn) -> Content:
    return Content(
        id=body.id,
        platform=body.platform,
        influencer_id=body.influencer_id,
        campaign_id=body.campaign_id,
        url=body.url,
        published_at=normalize_time(body.published_at),
        type=body.type,
    )


def _content_changes(body: ContentPatch) -> dict[str, Any]:
    return _changes(body, required=("platform", "influencer_id"))


def _content_filters(
    platform: Filter = None,
    influencer_id: Filter = None,
    campaign_id: Filter = None,
    type: str | None = None,
) -> dict[str, str | None]:
    return {
        "platform": platform,
        "influencer_id": influencer_id,
        "campaign_id": campaign_id,
        "type": type,
    }


add_crud_routes(
    router,
    EntityRoutes(
        kind=Kind.CONTENT,
        one="content",
        many="content",
        path="/content",
        item_path="/content/{content_id:path}",
        summaries=Summaries(
            create="Register a content item",
            list="List content (filters, search, cursor)",
            get="One content item",
            patch="Change a content item",
            delete="Remove a content item",
        ),
        example=EXAMPLES["content"],
        entity_id=_content_id,
        new_entity=_new_content,
        changes=_content_changes,
        filters=_content_filters,
        reader=any_reader,
    ),
)
