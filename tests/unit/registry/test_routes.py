"""The registry's routes as the OpenAPI document shows them: built by one factory, they
keep the paths, methods, operation ids, parameters and bodies they had."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from hypemeter.errors import InvalidInput
from hypemeter.registry.crud import list_filters
from hypemeter.registry.routes import router

ROUTES = {
    ("POST", "/v1/influencers"): (
        "create_influencer_v1_influencers_post",
        "Register an influencer",
    ),
    ("GET", "/v1/influencers"): (
        "list_influencers_v1_influencers_get",
        "List influencers (filters, search, cursor)",
    ),
    ("GET", "/v1/influencers/{influencer_id}"): (
        "get_influencer_v1_influencers__influencer_id__get",
        "One influencer",
    ),
    ("PATCH", "/v1/influencers/{influencer_id}"): (
        "patch_influencer_v1_influencers__influencer_id__patch",
        "Change an influencer",
    ),
    ("DELETE", "/v1/influencers/{influencer_id}"): (
        "delete_influencer_v1_influencers__influencer_id__delete",
        "Remove an influencer; with erase=true also their events and rollups",
    ),
    ("POST", "/v1/campaigns"): ("create_campaign_v1_campaigns_post", "Create a campaign"),
    ("GET", "/v1/campaigns"): (
        "list_campaigns_v1_campaigns_get",
        "List campaigns (filters, search, cursor)",
    ),
    ("GET", "/v1/campaigns/{campaign_id}"): (
        "get_campaign_v1_campaigns__campaign_id__get",
        "One campaign",
    ),
    ("PATCH", "/v1/campaigns/{campaign_id}"): (
        "patch_campaign_v1_campaigns__campaign_id__patch",
        "Change a campaign",
    ),
    ("DELETE", "/v1/campaigns/{campaign_id}"): (
        "delete_campaign_v1_campaigns__campaign_id__delete",
        "Remove a campaign",
    ),
    ("POST", "/v1/content"): ("create_content_v1_content_post", "Register a content item"),
    ("GET", "/v1/content"): (
        "list_content_v1_content_get",
        "List content (filters, search, cursor)",
    ),
    ("GET", "/v1/content/{content_id}"): (
        "get_content_v1_content__content_id__get",
        "One content item",
    ),
    ("PATCH", "/v1/content/{content_id}"): (
        "patch_content_v1_content__content_id__patch",
        "Change a content item",
    ),
    ("DELETE", "/v1/content/{content_id}"): (
        "delete_content_v1_content__content_id__delete",
        "Remove a content item",
    ),
}


def _spec() -> dict[str, Any]:
    app = FastAPI()
    app.include_router(router)
    return app.openapi()


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }


def _parameters(operation: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(p["name"], p["in"], p.get("required", False)) for p in operation["parameters"]]


def _body(operation: dict[str, Any]) -> str | None:
    body = operation.get("requestBody")
    return None if body is None else body["content"]["application/json"]["schema"]["$ref"]


def test_paths_methods_operation_ids_and_summaries_are_those_of_before() -> None:
    operations = _operations(_spec())
    assert {key: (op["operationId"], op["summary"]) for key, op in operations.items()} == ROUTES


def test_list_parameters_keep_their_names_and_order() -> None:
    operations = _operations(_spec())
    paging = [("q", "query", False), ("cursor", "query", False), ("limit", "query", False)]
    assert _parameters(operations["GET", "/v1/influencers"]) == [
        ("tag", "query", False),
        ("platform", "query", False),
        *paging,
    ]
    assert _parameters(operations["GET", "/v1/campaigns"]) == [
        ("brand", "query", False),
        ("influencer_id", "query", False),
        ("link_code", "query", False),
        *paging,
    ]
    assert _parameters(operations["GET", "/v1/content"]) == [
        ("platform", "query", False),
        ("influencer_id", "query", False),
        ("campaign_id", "query", False),
        ("type", "query", False),
        *paging,
    ]


def test_item_routes_name_their_entity_and_only_influencers_erase() -> None:
    operations = _operations(_spec())
    for kind, name in (("influencers", "influencer_id"), ("campaigns", "campaign_id")):
        for method in ("GET", "PATCH"):
            path = f"/v1/{kind}/{{{name}}}"
            assert _parameters(operations[method, path]) == [(name, "path", True)]
    assert _parameters(operations["DELETE", "/v1/influencers/{influencer_id}"]) == [
        ("influencer_id", "path", True),
        ("erase", "query", False),
    ]
    assert _parameters(operations["DELETE", "/v1/campaigns/{campaign_id}"]) == [
        ("campaign_id", "path", True)
    ]
    assert _parameters(operations["DELETE", "/v1/content/{content_id}"]) == [
        ("content_id", "path", True)
    ]


def test_bodies_are_the_kinds_own_models() -> None:
    operations = _operations(_spec())
    bodies = {key: _body(op) for key, op in operations.items() if _body(op) is not None}
    assert bodies == {
        ("POST", "/v1/influencers"): "#/components/schemas/InfluencerIn",
        ("PATCH", "/v1/influencers/{influencer_id}"): "#/components/schemas/InfluencerPatch",
        ("POST", "/v1/campaigns"): "#/components/schemas/CampaignIn",
        ("PATCH", "/v1/campaigns/{campaign_id}"): "#/components/schemas/CampaignPatch",
        ("POST", "/v1/content"): "#/components/schemas/ContentIn",
        ("PATCH", "/v1/content/{content_id}"): "#/components/schemas/ContentPatch",
    }
    for key in bodies:
        assert operations[key]["requestBody"]["required"] is True


def test_documented_replies_carry_the_kind_example() -> None:
    operations = _operations(_spec())
    created = operations["POST", "/v1/campaigns"]["responses"]["201"]
    assert created["content"]["application/json"]["example"]["id"] == "spring-launch"
    listed = operations["GET", "/v1/content"]["responses"]["200"]
    page = listed["content"]["application/json"]["example"]
    assert page["data"][0]["id"] == "18012345678901234"
    erased = operations["DELETE", "/v1/influencers/{influencer_id}"]["responses"]["200"]
    assert erased["content"]["application/json"]["example"] == {
        "id": "inf-42",
        "deleted": True,
        "erased_events": 0,
    }
    removed = operations["DELETE", "/v1/campaigns/{campaign_id}"]["responses"]["200"]
    assert removed["content"]["application/json"]["example"] == {
        "id": "spring-launch",
        "deleted": True,
    }


def test_list_filters_drop_unset_values_and_spell_the_platform_canonically() -> None:
    assert list_filters({"tag": None, "platform": "Instagram", "type": ""}) == {
        "platform": "instagram"
    }
    assert list_filters({"brand": "Acme", "link_code": None}) == {"brand": "Acme"}


def test_list_filters_refuse_an_unknown_platform_naming_it() -> None:
    with pytest.raises(InvalidInput) as caught:
        list_filters({"platform": "myspace"})
    assert caught.value.field == "platform"
    assert "myspace" in str(caught.value)
