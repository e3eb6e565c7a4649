"""The query API's answers as the HTTP edge writes them: JSON bodies and CSV files.

Pure: no I/O. Each ``*_body`` gives the JSON body of one answer (key order
included, as clients see it); ``to_csv`` writes a body's series or ``data`` list
as CSV. Metric values are written as plain numbers: integral ones as integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hypemeter import csvfile
from hypemeter.metrics.model import Columns, bucket_labels, format_instant, plain_number
from hypemeter.metrics.model.answers import (
    AggregatePage,
    EmvRateTable,
    LeaderboardPage,
    SeriesAnswer,
    Statistics,
    TrendingPage,
    UserActivityPage,
)

AGGREGATE_COLUMNS = ["key", "value"]
LEADERBOARD_COLUMNS = ["influencer_id", "value", "rank"]
TRENDING_COLUMNS = [
    "content_id",
    "interaction_count",
    "total_engagement",
    "latest_interaction",
    "sample_text",
    "common_tags",
]
USER_COLUMNS = ["user_id", "interaction_count", "total_engagement", "platforms", "last_seen"]


def statistics_body(statistics: Statistics) -> dict[str, Any]:
    return {"elapsed_ms": statistics.elapsed_ms, "rows_read": statistics.rows_read}


def series_body(answer: SeriesAnswer, scope: Mapping[str, str]) -> dict[str, Any]:
    """``scope`` (what the series is of, e.g. its influencer_id) comes first."""
    time_range, grain = answer.time_range, answer.granularity
    columns: list[Sequence[Any]] = [bucket_labels(time_range, grain)]
    columns += [answer.values[name] for name in answer.metrics]
    body: dict[str, Any] = {
        **scope,
        "start": format_instant(time_range.start_us),
        "end": format_instant(time_range.end_us),
        "granularity": grain.value,
        "metrics": list(answer.metrics),
        "series": Columns(("ts", *answer.metrics), columns),
        "totals": dict(answer.totals),
    }
    if answer.influencers is not None:
        body["influencers"] = [
            {"influencer_id": item.influencer_id, "totals": dict(item.totals)}
            for item in answer.influencers
        ]
    body["statistics"] = statistics_body(answer.statistics)
    return body


def _page(data: list[dict[str, Any]], next_cursor: str | None, stats: Statistics) -> dict[str, Any]:
    return {"data": data, "next_cursor": next_cursor, "statistics": statistics_body(stats)}


def aggregate_body(page: AggregatePage) -> dict[str, Any]:
    data = [{"key": row.key, "value": plain_number(row.value)} for row in page.rows]
    return _page(data, page.next_cursor, page.statistics)


def leaderboard_body(page: LeaderboardPage) -> dict[str, Any]:
    data = [
        {"influencer_id": row.influencer_id, "value": plain_number(row.value), "rank": row.rank}
        for row in page.rows
    ]
    return _page(data, page.next_cursor, page.statistics)


def trending_body(page: TrendingPage) -> dict[str, Any]:
    data = [
        {
            "content_id": row.content_id,
            "interaction_count": row.interactions,
            "total_engagement": plain_number(row.engagement),
            "latest_interaction": format_instant(row.latest_us),
            "sample_text": row.sample_text,
            "common_tags": list(row.tags),
        }
        for row in page.rows
    ]
    return _page(data, page.next_cursor, page.statistics)


def user_activity_body(page: UserActivityPage) -> dict[str, Any]:
    data = [
        {
            "user_id": row.user_id,
            "interaction_count": row.interactions,
            "total_engagement": plain_number(row.engagement),
            "platforms": list(row.platforms),
            "last_seen": format_instant(row.last_seen_us),
        }
        for row in page.rows
    ]
    return _page(data, page.next_cursor, page.statistics)


def emv_body(table: EmvRateTable) -> dict[str, Any]:
    rates: dict[str, dict[str, float]] = {}
    for platform, metric, value in table.rates:
        rates.setdefault(platform, {})[metric] = value
    return {"rates": rates, "custom": [f"{p}.{m}" for p, m in table.custom]}


def to_csv(body: Mapping[str, Any], columns: Sequence[str] | None = None) -> str:
    """The series (or the ``data`` list, with these columns) of a body as CSV with a
    header; cells are made safe to open in a spreadsheet (``hypemeter.csvfile``)."""
    if "series" in body:
        return csvfile.to_csv(["ts", *body["metrics"]], body["series"])
    return csvfile.to_csv(columns or [], body["data"])
