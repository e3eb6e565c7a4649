"""How a request is named in the audit log, and which requests are audited at all."""

from __future__ import annotations

import pytest

from hypemeter.auth.audit import (
    Action,
    AuditEntry,
    clip_fields,
    describe,
    entry_from_row,
    entry_values,
    is_audited_path,
    new_entry_id,
)


@pytest.mark.parametrize(
    ("method", "template", "params", "query", "created", "expected"),
    [
        ("POST", "/v1/admin/keys", {}, {}, "k1", Action("key.create", "key", "k1")),
        (
            "DELETE",
            "/v1/admin/keys/{key_id}",
            {"key_id": "k1"},
            {},
            None,
            Action("key.revoke", "key", "k1"),
        ),
        (
            "POST",
            "/v1/influencers",
            {},
            {},
            "inf-1",
            Action("influencer.create", "influencer", "inf-1"),
        ),
        (
            "PATCH",
            "/v1/influencers/{influencer_id}",
            {"influencer_id": "inf-1"},
            {},
            None,
            Action("influencer.update", "influencer", "inf-1"),
        ),
        (
            "DELETE",
            "/v1/influencers/{influencer_id}",
            {"influencer_id": "inf-1"},
            {"erase": "true"},
            None,
            Action("influencer.erase", "influencer", "inf-1"),
        ),
        (
            "DELETE",
            "/v1/content/{content_id:path}",
            {"content_id": "ig/1"},
            {},
            None,
            Action("content.delete", "content", "ig/1"),
        ),
        (
            "POST",
            "/v1/admin/dead-letters/{letter_id}/replay",
            {"letter_id": "d1"},
            {},
            None,
            Action("dead_letter.replay", "dead_letter", "d1"),
        ),
        ("PUT", "/v1/admin/emv", {}, {}, None, Action("emv.update", "emv", "")),
        (
            "DELETE",
            "/v1/admin/connectors/{connector_id}",
            {"connector_id": "c1"},
            {},
            None,
            Action("connector.delete", "connector", "c1"),
        ),
        (
            "PUT",
            "/v1/campaigns/{campaign_id}/influencers/{influencer_id}",
            {"campaign_id": "c", "influencer_id": "i"},
            {},
            None,
            Action("influencer.update", "influencer", "i"),
        ),
        ("POST", "/v1/oauth/token", {}, {}, None, Action("token.issue", "token", "")),
    ],
)
def test_a_route_names_its_action_and_target(
    method: str,
    template: str,
    params: dict[str, str],
    query: dict[str, str],
    created: str | None,
    expected: Action,
) -> None:
    assert describe(method, template, params, query, created) == expected


@pytest.mark.parametrize(
    ("path", "audited"),
    [
        ("/v1/admin/keys", True),
        ("/v1/influencers/inf-1", True),
        ("/v1/oauth/token", True),
        ("/v1/events", False),
        ("/v1/track/likes", False),
        ("/v1/webhooks/instagram/c1", False),
        ("/v1/stream", False),
        ("/v1/metrics/subscribe", True),
        ("/healthz", False),
    ],
)
def test_ingest_webhooks_and_live_push_are_never_audited(path: str, audited: bool) -> None:
    assert is_audited_path(path) is audited


def test_entry_ids_sort_by_time() -> None:
    ids = [new_entry_id(t) for t in (5, 40, 1_000_000, 1_795_183_200_000_000)]
    assert ids == sorted(ids)
    assert new_entry_id(7) != new_entry_id(7)


def test_field_names_are_kept_bounded_and_values_never_reach_an_entry() -> None:
    names = clip_fields(f"f{n}" for n in range(80))
    assert len(names) == 50
    entry = AuditEntry("id", "acme", 1, "k", "a", "t", "x", 200, "1.2.3.4", ("secret",))
    assert entry_from_row(entry_values(entry)) == entry
