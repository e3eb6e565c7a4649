"""Example answers of the query API, shown in its OpenAPI document."""

from __future__ import annotations

from typing import Any

STATS: dict[str, Any] = {"elapsed_ms": 2.1, "rows_read": 48}
SERIES_EXAMPLE = {
    "influencer_id": "inf-42",
    "start": "2026-11-20T14:00:00Z",
    "end": "2026-11-20T16:00:00Z",
    "granularity": "hour",
    "metrics": ["likes", "comments"],
    "series": [
        {"ts": "2026-11-20T14:00:00Z", "likes": 12, "comments": 3},
        {"ts": "2026-11-20T15:00:00Z", "likes": 0, "comments": 0},
    ],
    "totals": {"likes": 12, "comments": 3},
    "statistics": STATS,
}
CAMPAIGN_EXAMPLE = {
    **{k: v for k, v in SERIES_EXAMPLE.items() if k != "influencer_id"},
    "campaign_id": "summer-drop",
    "influencers": [{"influencer_id": "inf-42", "totals": {"likes": 12, "comments": 3}}],
}
TRENDING_EXAMPLE = {
    "data": [
        {
            "content_id": "post-9001",
            "interaction_count": 57,
            "total_engagement": 61,
            "latest_interaction": "2026-11-20T15:59:12Z",
            "sample_text": "love this!",
            "common_tags": ["giveaway", "question"],
        }
    ],
    "next_cursor": None,
    "statistics": STATS,
}
USERS_EXAMPLE = {
    "data": [
        {
            "user_id": "fan-77",
            "interaction_count": 9,
            "total_engagement": 9,
            "platforms": ["instagram", "tiktok"],
            "last_seen": "2026-11-20T15:42:00Z",
        }
    ],
    "next_cursor": "eyJxIjoi...",
    "statistics": STATS,
}
LEADERBOARD_EXAMPLE = {
    "data": [{"influencer_id": "inf-42", "value": 3.75, "rank": 1}],
    "next_cursor": None,
    "statistics": STATS,
}
EMV_EXAMPLE = {
    "rates": {"instagram": {"likes": 0.12, "views": 0.02}},
    "custom": ["instagram.likes"],
}

TENANT_EXAMPLE = {k: v for k, v in SERIES_EXAMPLE.items() if k != "influencer_id"}

AGGREGATE_EXAMPLE = {
    "data": [{"key": "instagram", "value": 120}],
    "next_cursor": None,
    "statistics": {"elapsed_ms": 3.2, "rows_read": 40},
}
