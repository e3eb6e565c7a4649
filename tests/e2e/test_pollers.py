"""The pollers against fake platforms over real HTTP (``fake_platforms.FakePlatforms``).

A live server polls a fake Instagram, YouTube, TikTok and X for the counters of
the tenant's registered content; what it stored is read back through the query
API. The fake logs every call (time, token, ids asked, status) and enforces a
sliding-window limit per token, so the tests check the poller's politeness from
the platform's side: no window ever holds more calls than allowed, Retry-After
and ``x-rate-limit-reset`` are waited out, 5xx answers are retried after a
pause, YouTube's daily units run out and stay out, X's "0 remaining" is waited out
until its reset.

The fake also records where each credential travelled (a header, never the URL)
and refreshes tokens as Instagram and TikTok do, so the tests check that expiring
tokens are refreshed, used and kept, that a refused refresh shows in the
ingestion health, and that no credential reaches a process log.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from hypemeter.settings import Settings

from . import cluster
from .fake_platforms import CallRecord, FakePlatforms, Limit, Scripted
from .support import (
    LiveServer,
    ServerFactory,
    ServerProcess,
    TenantKeys,
    bearer,
    provision,
    rfc3339,
    run_coroutine,
    utc_now,
)

PLATFORMS = ("instagram", "youtube", "tiktok", "x")
CREDENTIAL = {
    "instagram": "access_token",
    "youtube": "api_key",
    "tiktok": "access_token",
    "x": "bearer_token",
}
SECRETS = {
    "instagram": {"app_secret": "s", "verify_token": "v"},
    "youtube": {"hub_secret": "s"},
    "tiktok": {"client_secret": "s"},
    "x": {"consumer_secret": "s"},
}
URL_SETTING = {p: f"{p}_api_url" for p in PLATFORMS}
TOKEN_URL_SETTING = "instagram_token_url"  # TikTok refreshes on its API host
PERIOD = {"period": "2h", "granularity": "hour"}  # the current and the previous hour
ROOMY = {"window_calls": 100, "window_s": 10, "capacity": 10, "refill_per_s": 10}
FAST = [[None, 0.2]]  # poll every item on every round (a round each 0.5 s)
WINDOW_S = 2.0
WINDOW_POLL = {"window_calls": 3, "window_s": 2, "capacity": 3, "refill_per_s": 3}
JITTER = 0.1  # seconds a call may take on the wire more than another (localhost)


# -- helpers ------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ago(seconds: float) -> str:
    return rfc3339(utc_now() - dt.timedelta(seconds=seconds))


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """``check()`` until it is truthy; its last value in the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(every)


@pytest.fixture
def fake() -> Iterator[FakePlatforms]:
    platforms = FakePlatforms().start()
    yield platforms
    platforms.stop()


class Polled:
    """A live server whose platform API URLs point at the fake, seen by one tenant."""

    def __init__(self, srv: LiveServer, fake: FakePlatforms) -> None:
        self.srv = srv
        self.fake = fake
        keys = srv.keys["acme"]
        self.admin = srv.client(keys.admin)
        self.read = srv.client(keys.read)
        # The connector view with its polling health, from the process that polls (on
        # the cluster the client would send every other GET to the twin, which does not).
        self.primary = httpx.Client(base_url=srv.url, headers=bearer(keys.admin), timeout=30)

    def close(self) -> None:
        for client in (self.admin, self.read, self.primary):
            client.close()

    def influencer(self, platform: str, account: str | None = None) -> str:
        influencer = unique("inf")
        accounts = [{"platform": platform, "account_id": account or unique("acct")}]
        body = {"id": influencer, "name": influencer, "accounts": accounts}
        response = self.admin.post("/v1/influencers", json=body)
        assert response.status_code == 201, response.text
        return influencer

    def content(
        self, platform: str, influencer: str, content_id: str, published_s_ago: float = 5.0
    ) -> str:
        body = {
            "id": content_id,
            "platform": platform,
            "influencer_id": influencer,
            "published_at": ago(published_s_ago),
        }
        response = self.admin.post("/v1/content", json=body)
        assert response.status_code == 201, response.text
        return content_id

    def connector(
        self,
        platform: str,
        tokens: Sequence[str | Mapping[str, Any]],
        poll: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> str:
        """A polling connector; a token is a credential's secret, or the whole credential."""
        body = {
            "platform": platform,
            "secrets": dict(secrets or SECRETS[platform]),
            "credentials": [
                {CREDENTIAL[platform]: token} if isinstance(token, str) else dict(token)
                for token in tokens
            ],
            "poll": dict(poll or {}),
        }
        response = self.admin.post("/v1/admin/connectors", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def refused(self, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.admin.post("/v1/admin/connectors", json=body)
        assert response.status_code == 400, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == "invalid_input"
        return error

    def delete(self, connector_id: str) -> None:
        response = self.admin.delete(f"/v1/admin/connectors/{connector_id}")
        assert response.status_code == 200, response.text

    def polling(self, connector_id: str) -> dict[str, Any]:
        response = self.primary.get("/v1/admin/connectors")
        assert response.status_code == 200, response.text
        found = [c for c in response.json()["data"] if c["id"] == connector_id]
        assert len(found) == 1
        status: dict[str, Any] = found[0]["polling"]
        return status

    def totals(self, influencer: str, metrics: Sequence[str]) -> dict[str, Any]:
        response = self.read.get(
            f"/v1/influencers/{influencer}/metrics",
            params={**PERIOD, "metrics": ",".join(metrics)},
        )
        assert response.status_code == 200, response.text
        totals: dict[str, Any] = response.json()["totals"]
        return totals

    def by_content(self, metric: str, platform: str) -> dict[str, float]:
        response = self.read.get(
            "/v1/metrics/aggregate",
            params={
                "metric": metric,
                "group_by": "content",
                "platform": platform,
                "period": "2h",
                "limit": 1000,
            },
        )
        assert response.status_code == 200, response.text
        return {row["key"]: row["value"] for row in response.json()["data"]}

    def wait_totals(
        self, influencer: str, expected: Mapping[str, float], timeout: float = 15.0
    ) -> None:
        metrics = sorted(expected)
        deadline = time.monotonic() + timeout
        while (now := self.totals(influencer, metrics)) != dict(expected):
            assert time.monotonic() < deadline, f"totals {now}, not {dict(expected)}"
            time.sleep(0.1)

    def calls(self, platform: str, token: str | None = None) -> list[CallRecord]:
        return self.fake.calls_of(platform, token)

    def from_script(
        self, platform: str, n: int, since: int, timeout: float = 10.0
    ) -> list[CallRecord]:
        """The first call after the first ``since`` that met a scripted answer, and the
        ``n - 1`` calls to ``platform`` after it (waited for)."""

        def found() -> list[CallRecord] | None:
            calls = self.calls(platform)[since:]
            first = next((i for i, c in enumerate(calls) if c.scripted), None)
            return None if first is None or len(calls) < first + n else calls[first : first + n]

        made: list[CallRecord] = wait_for(found, timeout, f"{n} calls from the script")
        return made

    def wait_calls(
        self, platform: str, count: int, token: str | None = None, timeout: float = 15.0
    ) -> None:
        wait_for(
            lambda: len(self.calls(platform, token)) >= count,
            timeout,
            f"{count} calls to {platform} {token or ''}",
        )


@pytest.fixture
def polled(make_server: ServerFactory, fake: FakePlatforms) -> Iterator[Callable[..., Polled]]:
    """``polled(**settings)``: a live server polling the fake (fast backoff by default)."""
    made: list[Polled] = []

    def start(**settings: Any) -> Polled:
        settings.setdefault("poll_backoff_base_seconds", 0.05)
        settings.setdefault("poll_backoff_cap_seconds", 0.2)
        urls = {URL_SETTING[p]: fake.url for p in PLATFORMS} | {TOKEN_URL_SETTING: fake.url}
        env = Polled(make_server(**urls, **settings), fake)
        made.append(env)
        return env

    yield start
    for env in made:
        env.close()


def most_in_window(calls: Sequence[CallRecord], window_s: float) -> int:
    """The most calls any window of ``window_s`` seconds holds (as the fake counts: a
    call exactly ``window_s`` after another has left its window)."""
    times = sorted(c.at for c in calls)
    most = 0
    for i, start in enumerate(times):
        most = max(most, sum(1 for t in times[i:] if t - start < window_s))
    return most


def gaps(calls: Sequence[CallRecord]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(calls)]


# -- what each platform reports, and what Hypemeter makes of it ---------------------

METRICS = {
    "instagram": ("views", "reach", "likes", "comments", "shares", "saves"),
    "youtube": ("views", "likes", "comments"),
    "tiktok": ("views", "likes", "comments", "shares"),
    "x": ("likes", "comments", "saves", "impressions", "shares"),
}


def raw(platform: str, counts: Mapping[str, int]) -> dict[str, int]:
    """The platform's own counters for the Hypemeter metrics ``counts``."""
    if platform == "instagram":
        names = {"saves": "saved"}
        return {names.get(m, m): counts[m] for m in METRICS[platform]}
    if platform == "youtube":
        names = {"views": "viewCount", "likes": "likeCount", "comments": "commentCount"}
        return {names[m]: counts[m] for m in METRICS[platform]}
    if platform == "tiktok":
        names = {"views": "view", "likes": "like", "comments": "comment", "shares": "share"}
        return {f"{names[m]}_count": counts[m] for m in METRICS[platform]}
    quotes = counts["shares"] // 3  # X: shares are re-posts, retweets plus quotes
    return {
        "like_count": counts["likes"],
        "reply_count": counts["comments"],
        "bookmark_count": counts["saves"],
        "impression_count": counts["impressions"],
        "retweet_count": counts["shares"] - quotes,
        "quote_count": quotes,
    }


def counts(likes: int, comments: int, views: int, shares: int, saves: int) -> dict[str, int]:
    return {
        "likes": likes,
        "comments": comments,
        "views": views,
        "shares": shares,
        "saves": saves,
        "reach": views // 2,
        "impressions": views * 3,
    }


# -- 1. snapshots become exact deltas -------------------------------------------------

PHASES = (  # item a, item b: read, then raised, then lowered (unlikes, deleted comments)
    (counts(10, 2, 100, 3, 1), counts(5, 0, 40, 0, 0)),
    (counts(25, 7, 400, 9, 4), counts(5, 0, 40, 0, 0)),
    (counts(21, 6, 400, 8, 2), counts(3, 0, 40, 0, 0)),
)
SUBSCRIBERS = (1000, 1500, 1400)  # YouTube rounds to 3 significant figures


def test_snapshots_become_exact_deltas_as_counters_rise_and_fall(
    polled: Callable[..., Polled],
) -> None:
    """All four platforms at once, on one server: each with two items (and YouTube
    with the influencer's channel), read, raised, then lowered."""
    env = polled()
    fake = env.fake
    channel = unique("UC")
    influencers = {p: env.influencer(p, channel if p == "youtube" else None) for p in PLATFORMS}
    items = {
        p: [env.content(p, influencers[p], unique(f"{p}-{n}")) for n in "ab"] for p in PLATFORMS
    }
    tokens = {p: unique(f"{p}-tok") for p in PLATFORMS}
    connectors: dict[str, str] = {}
    repeats = {"instagram": 4}  # one call per item there; one per round elsewhere
    for phase, values in enumerate(PHASES):
        expected: dict[str, dict[str, float]] = {}
        for platform in PLATFORMS:
            for item, value in zip(items[platform], values, strict=True):
                fake.set(platform, item, **raw(platform, value))
            expected[platform] = {m: sum(v[m] for v in values) for m in METRICS[platform]}
        fake.set("youtube-channel", channel, subscriberCount=SUBSCRIBERS[phase])
        expected["youtube"]["followers"] = SUBSCRIBERS[phase]
        if phase == 0:
            for platform in PLATFORMS:
                poll = {**ROOMY, "curve": FAST}
                connectors[platform] = env.connector(platform, [tokens[platform]], poll)
        for platform in PLATFORMS:
            env.wait_totals(influencers[platform], expected[platform])
        if phase in (0, 2):
            # Polled again and again with the same counters: nothing more is counted.
            made = {p: len(env.calls(p, tokens[p])) for p in PLATFORMS}
            for platform in PLATFORMS:
                again = made[platform] + repeats.get(platform, 2)
                env.wait_calls(platform, again, tokens[platform])
        for platform in PLATFORMS:
            totals = env.totals(influencers[platform], sorted(expected[platform]))
            assert totals == expected[platform], platform
            likes = env.by_content("likes", platform)
            assert {i: likes.get(i) for i in items[platform]} == {
                i: v["likes"] for i, v in zip(items[platform], values, strict=True)
            }, platform
    for platform in PLATFORMS:
        calls = env.calls(platform, tokens[platform])
        assert {c.status for c in calls} == {200}, platform
        asked = {i for c in calls for i in c.ids}
        assert asked == set(items[platform]) | ({channel} if platform == "youtube" else set())
        status = env.polling(connectors[platform])
        assert status["calls"] >= len(calls) - 1  # a call may be in flight
        assert status["last_error"] is None, (platform, status)
        assert status["last_success"] is not None
    assert fake.violations == []


# -- 2. no limit is ever exceeded ---------------------------------------------------


def test_no_window_ever_holds_more_calls_than_the_limit(polled: Callable[..., Polled]) -> None:
    """3 calls per 2 s per token on the connector, a bucket that would allow 9,
    and more to poll than that: Instagram reads 4 media a round (one call each),
    YouTube a videos and a channels call, TikTok and X one call (a round each
    0.5 s). Instagram and YouTube have two credentials, and both take part.

    The fake counts a call when it arrives, the poller when it sends it: the fake's
    window is JITTER shorter than the connector's, so that a first call slower on
    the wire than the fourth is not taken for a fourth call in the window (that
    case is test_the_window_holds_where_the_platform_counts, a known failure)."""
    env = polled()
    fake = env.fake
    tokens: dict[str, list[str]] = {}
    for platform in PLATFORMS:
        fake.limits[platform] = Limit(3, WINDOW_S - JITTER)
        influencer = env.influencer(platform, unique("UC") if platform == "youtube" else None)
        for n in range(4 if platform == "instagram" else 3):
            item = env.content(platform, influencer, unique(f"{platform}-{n}"))
            fake.set(platform, item, **raw(platform, counts(n + 1, n, 10 * n, n, n)))
        two = platform in ("instagram", "youtube")
        tokens[platform] = [unique(f"{platform}-tok") for _ in range(2 if two else 1)]
    for platform in PLATFORMS:
        env.connector(platform, tokens[platform], {**WINDOW_POLL, "curve": FAST})
    wanted = [(platform, token) for platform in PLATFORMS for token in tokens[platform]]
    wait_for(lambda: all(len(env.calls(p, t)) >= 4 for p, t in wanted), 30.0, "4 calls a token")
    assert fake.violations == []
    for platform in PLATFORMS:
        for token in tokens[platform]:
            calls = env.calls(platform, token)
            assert {c.status for c in calls} == {200}, (platform, calls)
            assert most_in_window(calls, WINDOW_S - JITTER) <= 3, (platform, token, calls)
            assert len(calls) >= 4, (platform, token, len(calls))
    # Kept to the limit, not below it: TikTok calls each round (0.5 s) but for the
    # window, so its first 4 s hold more than one window's worth.
    tiktok = env.calls("tiktok")
    assert len([c for c in tiktok if c.at - tiktok[0].at < 4.0]) >= 4


def test_the_window_holds_where_the_platform_counts(polled: Callable[..., Polled]) -> None:
    """The first call takes 0.3 s to arrive; the fourth goes when the poller's own
    window allows it, 2 s after it sent the first: 1.7 s after the first arrived."""
    env = polled()
    env.fake.limits["tiktok"] = Limit(3, WINDOW_S)
    influencer = env.influencer("tiktok")
    item = env.content("tiktok", influencer, unique("tiktok"))
    env.fake.set("tiktok", item, **raw("tiktok", counts(1, 1, 1, 1, 1)))
    env.fake.delay("tiktok", 0.3)
    env.connector("tiktok", [unique("tok")], {**WINDOW_POLL, "curve": FAST})
    env.wait_calls("tiktok", 4, timeout=5.0)
    first, *_, fourth = env.calls("tiktok")[:4]
    assert fourth.at - first.at >= WINDOW_S - 0.3 - JITTER  # the poller kept its own window
    assert env.fake.violations == []


# -- 3. Retry-After -------------------------------------------------------------------


def test_retry_after_pauses_the_credential_and_the_other_goes_on(
    polled: Callable[..., Polled],
) -> None:
    """TikTok with two credentials gets a 429 with ``Retry-After: 2``; Instagram with
    one gets a 429 with Retry-After as an HTTP date 3 s ahead."""
    env = polled()
    fake = env.fake
    influencers, items = {}, {}
    for platform in ("tiktok", "instagram"):
        influencers[platform] = env.influencer(platform)
        items[platform] = env.content(platform, influencers[platform], unique(platform))
        fake.set(platform, items[platform], **raw(platform, counts(1, 1, 1, 1, 1)))
    tiktok = [unique("tt-a"), unique("tt-b")]
    instagram = unique("ig")
    connectors = {
        "tiktok": env.connector("tiktok", tiktok, {**ROOMY, "curve": FAST}),
        "instagram": env.connector("instagram", [instagram], {**ROOMY, "curve": FAST}),
    }
    for token in tiktok:  # both credentials take part
        env.wait_calls("tiktok", 1, token)
    env.wait_calls("instagram", 1, instagram)
    until = int(time.time()) + 4  # a whole second, 3 to 4 s ahead
    fake.script("tiktok", Scripted(429, {"Retry-After": "2"}, {"error": {"code": "rate_limit"}}))
    http_date = email.utils.formatdate(until, usegmt=True)
    fake.script("instagram", Scripted(429, {"Retry-After": http_date}))
    wait_for(lambda: [c for c in env.calls("tiktok") if c.status == 429], 5, "the tiktok 429")
    (refused,) = [c for c in env.calls("tiktok") if c.status == 429]
    status = wait_for(
        lambda: (s := env.polling(connectors["tiktok"]))["paused_credentials"] == 1 and s,
        1,
        "the paused credential",
    )
    assert "Retry-After" in status["last_error"]
    # Counters changed meanwhile are read by the other credential.
    for platform in ("tiktok", "instagram"):
        fake.set(platform, items[platform], **raw(platform, counts(7, 1, 1, 1, 1)))
    env.wait_totals(influencers["tiktok"], {"likes": 7})
    paused = refused.token
    other = next(t for t in tiktok if t != paused)
    wait_for(lambda: env.calls("tiktok", paused)[-1].at > refused.at, 5, "the paused token again")
    after = [c for c in env.calls("tiktok", paused) if c.at > refused.at]
    assert after[0].at - refused.at >= 2.0
    meanwhile = [c for c in env.calls("tiktok", other) if refused.at < c.at < after[0].at]
    assert len(meanwhile) >= 2 and {c.status for c in meanwhile} == {200}
    # Instagram, one credential: nothing until the date.
    env.wait_totals(influencers["instagram"], {"likes": 7})
    (ig_refused,) = [c for c in env.calls("instagram") if c.status == 429]
    ig_after = [c for c in env.calls("instagram") if c.at > ig_refused.at]
    assert ig_after and ig_after[0].wall >= until
    assert env.polling(connectors["instagram"])["paused_credentials"] == 0
    assert fake.violations == []


# -- 4. backoff on 5xx and on a 429 that names no time --------------------------------

BACKOFF = {"poll_backoff_base_seconds": 0.4, "poll_backoff_cap_seconds": 0.8}


def test_5xx_and_429_without_a_time_are_retried_after_a_backoff(
    polled: Callable[..., Polled],
) -> None:
    """Backoff base 0.4 s, cap 0.8 s: the n-th retry waits uniformly up to
    min(0.8, 0.4 * 2^(n-1)) (full jitter). Five attempts per call."""
    env = polled(**BACKOFF)
    fake = env.fake
    influencer = env.influencer("tiktok")
    item = env.content("tiktok", influencer, unique("tt"))
    fake.set("tiktok", item, **raw("tiktok", counts(1, 0, 10, 0, 0)))
    token = unique("tok")
    connector = env.connector("tiktok", [token], {**ROOMY, "curve": FAST})
    env.wait_totals(influencer, {"likes": 1})

    # Two 503s: the call goes through on its third attempt.
    before = len(env.calls("tiktok"))
    fake.set("tiktok", item, **raw("tiktok", counts(4, 0, 10, 0, 0)))
    fake.script("tiktok", Scripted(503), Scripted(503))
    first, second, third = env.from_script("tiktok", 3, before)
    env.wait_totals(influencer, {"likes": 4, "views": 10})
    assert [first.status, second.status, third.status] == [503, 503, 200]
    waits = gaps([first, second, third])
    assert waits[0] <= 0.4 + 0.15 and waits[1] <= 0.8 + 0.15, waits
    assert sum(waits) > 0.01, waits  # not fired again at once
    status = env.polling(connector)
    assert status["paused_credentials"] == 0 and status["last_success"] is not None

    # A 429 with no Retry-After nor reset header: retried after a backoff, no pause.
    before = len(env.calls("tiktok"))
    fake.set("tiktok", item, **raw("tiktok", counts(2, 1, 12, 0, 0)))
    fake.script("tiktok", Scripted(429, body={"error": {"code": "rate_limit_exceeded"}}))
    refused, retried = env.from_script("tiktok", 2, before)
    env.wait_totals(influencer, {"likes": 2, "views": 12, "comments": 1})
    assert (refused.status, retried.status) == (429, 200)
    assert retried.at - refused.at <= 0.4 + 0.15
    assert env.polling(connector)["paused_credentials"] == 0

    # Five 503s: the attempts run out; the error shows; the next round reads.
    before = len(env.calls("tiktok"))
    fake.script("tiktok", *[Scripted(503)] * 5)
    attempts = env.from_script("tiktok", 6, before)
    assert [c.status for c in attempts] == [503] * 5 + [200]
    assert all(w <= 0.8 + 0.15 for w in gaps(attempts[:5]))
    assert env.polling(connector)["last_error"] == "tiktok answered 503"
    fake.set("tiktok", item, **raw("tiktok", counts(9, 1, 12, 0, 0)))
    env.wait_totals(influencer, {"likes": 9, "views": 12, "comments": 1})
    assert fake.violations == []


def test_a_retried_5xx_shows_in_the_health(polled: Callable[..., Polled]) -> None:
    env = polled()
    influencer = env.influencer("x")
    item = env.content("x", influencer, unique("x"))
    env.fake.set("x", item, **raw("x", counts(1, 0, 10, 0, 0)))
    env.fake.script("x", Scripted(503), Scripted(503))
    connector = env.connector("x", [unique("tok")], {**ROOMY, "curve": FAST})
    env.wait_totals(influencer, {"likes": 1})
    assert [c.status for c in env.calls("x")][:3] == [503, 503, 200]
    assert "503" in (env.polling(connector)["last_error"] or "")


# -- 5. YouTube's daily units -----------------------------------------------------------


def test_youtube_stops_at_its_daily_units(polled: Callable[..., Polled]) -> None:
    """3 units a day: a round is a videos and a channels call (1 unit each), so the
    first round is read and stored, the second reads (and stores) videos and then waits
    for midnight Pacific, which does not come during the test."""
    env = polled()
    channel = unique("UC")
    influencer = env.influencer("youtube", channel)
    item = env.content("youtube", influencer, unique("yt"))
    env.fake.set("youtube", item, **raw("youtube", counts(5, 2, 50, 0, 0)))
    env.fake.set("youtube-channel", channel, subscriberCount=300)
    token = unique("key")
    connector = env.connector("youtube", [token], {**ROOMY, "daily_units": 3, "curve": FAST})
    env.wait_totals(influencer, {"likes": 5, "comments": 2, "views": 50, "followers": 300})
    env.wait_calls("youtube", 2)
    env.fake.set("youtube", item, **raw("youtube", counts(8, 2, 80, 0, 0)))
    time.sleep(2.5)  # five rounds' worth
    calls = env.calls("youtube")
    assert [(c.token, c.path, c.status) for c in calls] == [
        (token, "/youtube/v3/videos", 200),
        (token, "/youtube/v3/channels", 200),
        (token, "/youtube/v3/videos", 200),
    ]
    status = env.polling(connector)
    assert status["quota_left"] == 0 and status["calls"] == 3
    assert status["paused_credentials"] == 0  # out of units, not paused by the platform
    # The reading paid for is stored (the poller ingests it after the call the fake
    # server recorded: wait for it); the channels call waits for the reset.
    env.wait_totals(influencer, {"likes": 8, "views": 80})


# -- 6. X rate headers ------------------------------------------------------------------


def test_x_pauses_at_remaining_zero_until_the_reset(polled: Callable[..., Polled]) -> None:
    env = polled()
    influencer = env.influencer("x")
    item = env.content("x", influencer, unique("x"))
    env.fake.set("x", item, **raw("x", counts(1, 1, 10, 3, 1)))
    token = unique("bearer")
    connector = env.connector("x", [token], {**ROOMY, "curve": FAST})
    env.wait_totals(influencer, {"likes": 1, "shares": 3})
    reset = int(time.time()) + 3  # x-rate-limit-reset is in unix seconds
    before = len(env.calls("x"))
    env.fake.set("x", item, **raw("x", counts(6, 2, 10, 5, 1)))
    headers = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
    env.fake.script("x", Scripted(200, headers, real=True))
    # The answer that says "0 remaining" is read and counted all the same.
    (zero,) = env.from_script("x", 1, before)
    env.wait_totals(influencer, {"likes": 6, "comments": 2, "shares": 5})
    assert env.polling(connector)["paused_credentials"] == 1
    zero, first_after = env.from_script("x", 2, before)
    assert zero.status == 200 and zero.wall < reset <= first_after.wall
    assert first_after.wall - reset < 1.0  # and then it goes on
    assert env.polling(connector)["paused_credentials"] == 0


# -- 7. adaptive schedule ---------------------------------------------------------------


def test_fresh_items_are_polled_often_and_old_ones_rarely(polled: Callable[..., Polled]) -> None:
    env = polled()
    influencer = env.influencer("tiktok")
    fresh = env.content("tiktok", influencer, unique("fresh"), published_s_ago=1)
    old = env.content("tiktok", influencer, unique("old"), published_s_ago=10 * 86_400)
    for item in (fresh, old):
        env.fake.set("tiktok", item, **raw("tiktok", counts(2, 0, 0, 0, 0)))
    connector = env.connector(
        "tiktok", [unique("tok")], {**ROOMY, "curve": [[60, 0.5], [None, 30]]}
    )
    env.wait_totals(influencer, {"likes": 4})
    # Five polls at the fresh item's 0.5 s interval; a loaded machine may take longer.
    calls = wait_for(lambda: (c := env.calls("tiktok")) and len(c) >= 5 and c, 20.0, "5 polls")
    assert calls[0].ids == (fresh, old) or calls[0].ids == (old, fresh)
    assert [c for c in calls if old in c.ids] == calls[:1]
    assert all(c.ids == (fresh,) for c in calls[1:])
    assert min(gaps(calls)) >= 0.5
    next_poll = dt.datetime.fromisoformat(env.polling(connector)["next_poll"])
    assert next_poll - utc_now() < dt.timedelta(seconds=1)  # the fresh item's


# -- 8. configuration: disabled, deleted, refused ----------------------------------------

REFUSED: tuple[tuple[Any, str], ...] = (  # settings or credentials, and the field named
    ({"curve": []}, "poll.curve"),
    ({"curve": "fast"}, "poll.curve"),
    ({"curve": [[60, 0]]}, "poll.curve"),
    ({"curve": [[3600, 60], [60, 1]]}, "poll.curve"),
    ({"curve": [[None]]}, "poll.curve"),
    ({"curve": [[-1, 5]]}, "poll.curve"),
    ({"window_calls": 0}, "poll.window_calls"),
    ({"window_calls": -3}, "poll.window_calls"),
    ({"window_calls": "3"}, "poll.window_calls"),
    ({"window_calls": True}, "poll.window_calls"),
    ({"window_s": 0}, "poll.window_s"),
    ({"capacity": -1}, "poll.capacity"),
    ({"refill_per_s": 0}, "poll.refill_per_s"),
    ({"daily_units": 0}, "poll.daily_units"),
    ({"enabled": "no"}, "poll.enabled"),
    ({"interval": 5}, "poll.interval"),
    ([{}], "credentials.0"),
    ([{"access_token": ""}], "credentials.0"),
    ([{"access_token": 5}], "credentials.0"),
    ([{"access_token": None}], "credentials.0"),
    ([{"access_token": "ok"}, {"access_token": ["x"]}], "credentials.1"),
    ([{"access_token": "t", "expires_in": 10**12}], "credentials.0.expires_in"),  # was a 500
    (
        [{"access_token": "t", "expires_at": "9999-12-31T23:59:59-01:00"}],
        "credentials.0.expires_at",
    ),
)


def test_disabled_and_deleted_connectors_make_no_calls_and_bad_settings_are_refused(
    polled: Callable[..., Polled],
) -> None:
    env = polled()
    influencer = env.influencer("tiktok")
    item = env.content("tiktok", influencer, unique("tt"))
    env.fake.set("tiktok", item, **raw("tiktok", counts(3, 0, 0, 0, 0)))
    for body, field in REFUSED:
        credentials = body if isinstance(body, list) else [{"access_token": unique("bad")}]
        poll = body if isinstance(body, dict) else {}
        request = {"platform": "tiktok", "secrets": SECRETS["tiktok"]}
        error = env.refused({**request, "credentials": credentials, "poll": poll})
        assert error["field"] == field, (body, error)
    off, on = unique("off"), unique("on")
    disabled = env.connector("tiktok", [off], {**ROOMY, "curve": FAST, "enabled": False})
    enabled = env.connector("tiktok", [on], {**ROOMY, "curve": FAST})
    env.wait_totals(influencer, {"likes": 3})
    env.wait_calls("tiktok", 3, on)
    listed = env.primary.get("/v1/admin/connectors").json()["data"]
    assert sorted(c["id"] for c in listed) == sorted([disabled, enabled])  # none refused
    assert env.polling(disabled) is None  # not polled in this process
    env.delete(enabled)
    time.sleep(1.0)  # the scheduler follows within 0.5 s; a call in flight may land
    stopped = len(env.calls("tiktok"))
    time.sleep(1.5)
    assert len(env.calls("tiktok")) == stopped
    assert env.calls("tiktok", off) == []
    assert {c.token for c in env.calls("tiktok")} == {on}


# -- known failures -------------------------------------------------------------------------

UNUSABLE: tuple[tuple[Any, str], ...] = (  # accepted today, and never able to poll
    ({"window_calls": None}, "poll.window_calls"),  # round failed: '>=' ... 'NoneType'
    ({"capacity": None}, "poll.capacity"),  # TypeError building the poller (see below)
    ({"capacity": 0.5}, "poll.capacity"),  # round failed: 1 tokens exceed the capacity
    ([{"api_key": "k"}], "credentials.0"),  # round failed: the credential has no access_token
)


def test_settings_that_can_never_poll_are_refused(polled: Callable[..., Polled]) -> None:
    env = polled(poll_connectors=False)
    accepted = []
    for body, field in UNUSABLE:
        credentials = body if isinstance(body, list) else [{"access_token": unique("t")}]
        poll = body if isinstance(body, dict) else {}
        request = {"platform": "tiktok", "secrets": SECRETS["tiktok"]}
        response = env.admin.post(
            "/v1/admin/connectors", json={**request, "credentials": credentials, "poll": poll}
        )
        if response.status_code != 400 or response.json()["error"]["field"] != field:
            accepted.append((body, response.status_code))
    assert accepted == []


def test_one_bad_connector_does_not_stop_the_polling_of_the_others(
    polled: Callable[..., Polled],
) -> None:
    env = polled()
    influencer = env.influencer("tiktok")
    item = env.content("tiktok", influencer, unique("tt"))
    env.fake.set("tiktok", item, **raw("tiktok", counts(3, 0, 0, 0, 0)))
    request = {"platform": "tiktok", "secrets": SECRETS["tiktok"]}
    bad = {**request, "credentials": [{"access_token": "bad"}], "poll": {"capacity": None}}
    if env.admin.post("/v1/admin/connectors", json=bad).status_code == 400:
        return  # refused: the scheduler cannot meet it
    time.sleep(1.0)  # the scheduler has met it
    env.connector("tiktok", [unique("good")], {**ROOMY, "curve": FAST})
    env.wait_totals(influencer, {"likes": 3}, timeout=4.0)


def test_youtube_uses_every_credentials_units(polled: Callable[..., Polled]) -> None:
    """Two keys of 3 units: 6 calls in all, then quota_left 0."""
    env = polled()
    channel = unique("UC")
    influencer = env.influencer("youtube", channel)
    item = env.content("youtube", influencer, unique("yt"))
    env.fake.set("youtube", item, **raw("youtube", counts(5, 2, 50, 0, 0)))
    env.fake.set("youtube-channel", channel, subscriberCount=300)
    keys = [unique("key-a"), unique("key-b")]
    poll = {**ROOMY, "daily_units": 3, "curve": FAST}
    connector = env.connector("youtube", keys, poll)
    env.wait_calls("youtube", 5)
    time.sleep(2.0)
    assert env.polling(connector)["quota_left"] == 0
    assert len(env.calls("youtube")) == 6


# -- 9. credentials: in headers, never in a log; expiring tokens refreshed ---------------


def operator_key(srv: LiveServer) -> str:
    """A key with the read and admin scopes: the ingestion health is a read route, and
    what only admins see shows to keys that also hold the admin scope."""
    with httpx.Client(base_url=srv.url, headers=bearer(srv.keys["acme"].admin)) as client:
        made = client.post("/v1/admin/keys", json={"scopes": ["read", "admin"], "name": "ops"})
    assert made.status_code == 201, made.text
    secret: str = made.json()["key"]
    return secret


def health_of(srv: LiveServer, key: str, connector_id: str) -> tuple[dict[str, Any], str]:
    """The connector's entry in ``/v1/ingestion/health`` seen with ``key`` (from the
    process that polls), and the whole answer's text."""
    with httpx.Client(base_url=srv.url, headers=bearer(key), timeout=30) as client:
        response = client.get("/v1/ingestion/health")
    assert response.status_code == 200, response.text
    (entry,) = [c for c in response.json()["connectors"] if c["id"] == connector_id]
    return entry, response.text


class Spawned:
    """What ``Polled`` uses of a live server, for a ``hypemeter serve`` subprocess."""

    def __init__(self, url: str, keys: dict[str, TenantKeys]) -> None:
        self.url, self.keys = url, keys

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=bearer(key), timeout=30)


def polling_shows(
    srv: LiveServer, key: str, connector_id: str, *path: str
) -> tuple[dict[str, Any], str] | None:
    """``health_of`` once the connector's polling health holds a value at ``path``."""
    entry, text = health_of(srv, key, connector_id)
    found: Any = entry["polling"]
    for name in path:
        found = found.get(name) if isinstance(found, dict) else None
    return (entry, text) if found else None


def test_credentials_travel_in_headers_and_never_reach_the_process_log(
    tmp_path: Path, fake: FakePlatforms
) -> None:
    """``hypemeter serve`` at log level debug, with its access log, polls Instagram (whose
    token is refreshed first: Meta documents that request with the token in the query)
    and YouTube; no credential, old or new, is anywhere in the process's log."""
    data = tmp_path / "data"
    keys = run_coroutine(provision(Settings(data=data, **cluster.backend_overrides(data))))
    urls = {URL_SETTING[p]: fake.url for p in PLATFORMS} | {TOKEN_URL_SETTING: fake.url}
    env = {f"HYPEMETER_{name.upper()}": url for name, url in urls.items()} | {
        "HYPEMETER_LOG_LEVEL": "debug",
        "HYPEMETER_ACCESS_LOG": "true",
    }
    server = ServerProcess(data, tmp_path / "serve.log", env=env).wait_ready()
    old_token, new_token, api_key = unique("IGQold"), unique("IGQnew"), unique("AIzaKey")
    fake.issue["instagram"].append(new_token)
    try:
        env_ = Polled(cast(LiveServer, Spawned(server.url, keys)), fake)
        channel = unique("UC")
        for platform, account in (("instagram", None), ("youtube", channel)):
            influencer = env_.influencer(platform, account)
            item = env_.content(platform, influencer, unique(platform))
            fake.set(platform, item, **raw(platform, counts(3, 1, 30, 1, 1)))
        fake.set("youtube-channel", channel, subscriberCount=10)
        ig = {"access_token": old_token, "expires_in": "3600"}  # within the 7-day margin
        env_.connector("instagram", [ig], {**ROOMY, "curve": FAST})
        env_.connector("youtube", [api_key], {**ROOMY, "curve": FAST})
        # A second call of each: the first one's answer has been received (and logged).
        env_.wait_calls("instagram", 2)
        env_.wait_calls("youtube", 3)
        log = server.log()
        assert '"hypemeter ready"' in log or "hypemeter ready" in log
        for secret in (old_token, new_token, api_key):
            assert secret not in log
        polled_calls = env_.calls("instagram") + env_.calls("youtube")
        assert {c.credential_in for c in polled_calls} == {"header"}
        assert all(c.token not in c.query for c in polled_calls)
        assert {c.token for c in env_.calls("youtube")} == {api_key}
        env_.close()
    finally:
        server.terminate()
    log = server.log()
    for secret in (old_token, new_token, api_key, keys["acme"].admin):
        assert secret not in log
    (refresh,) = fake.refreshes_of("instagram")
    assert (refresh.token, refresh.status, refresh.issued) == (old_token, 200, new_token)
    assert {c.token for c in fake.calls_of("instagram")} == {new_token}


def test_expiring_tokens_are_refreshed_used_and_kept_across_a_restart(
    polled: Callable[..., Polled],
) -> None:
    env = polled()
    fake = env.fake
    items = {}
    for platform in ("instagram", "tiktok"):
        influencer = env.influencer(platform)
        items[platform] = env.content(platform, influencer, unique(platform))
        fake.set(platform, items[platform], **raw(platform, counts(2, 1, 20, 1, 1)))
    ig_old, ig_new = unique("IGQold"), unique("IGQnew")
    tt_old, tt_new, refresh_token = unique("act.old"), unique("act.new"), unique("rft.")
    fake.issue["instagram"].append(ig_new)
    fake.issue["tiktok"].append(tt_new)
    poll = {**ROOMY, "curve": FAST}
    ig_connector = env.connector(
        "instagram", [{"access_token": ig_old, "expires_in": 86_400}], poll
    )
    tt_credential = {
        "access_token": tt_old,
        "refresh_token": refresh_token,
        "client_key": "ck-1",
        "expires_in": 300,  # within TikTok's 15-minute margin
        "refresh_expires_in": 31_536_000,
    }
    tt_connector = env.connector("tiktok", [tt_credential], poll)
    env.wait_calls("instagram", 2, ig_new)
    env.wait_calls("tiktok", 2, tt_new)

    # Refreshed once each, before the first poll: the old tokens polled nothing.
    (ig_refresh,) = fake.refreshes_of("instagram")
    assert (ig_refresh.token, ig_refresh.issued) == (ig_old, ig_new)
    (tt_refresh,) = fake.refreshes_of("tiktok")
    assert (tt_refresh.token, tt_refresh.issued) == (refresh_token, tt_new)
    assert tt_refresh.form == {
        "client_key": "ck-1",
        "client_secret": SECRETS["tiktok"]["client_secret"],
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    }
    assert tt_refresh.query == ""  # the secrets went in the form body
    assert env.calls("instagram", ig_old) == [] and env.calls("tiktok", tt_old) == []
    for connector, lifetime in ((ig_connector, 5183944), (tt_connector, 86400)):
        tokens = env.polling(connector)["tokens"]
        assert tokens["last_refresh"] is not None and tokens["refresh_error"] is None
        expires = dt.datetime.fromisoformat(tokens["expires_at"])
        assert abs((expires - utc_now()).total_seconds() - lifetime) < 60
        assert env.polling(connector)["failing"] is False

    # Saved: a restart polls with the new tokens, and refreshes nothing again.
    data, keys = env.srv.data, env.srv.keys
    env.close()
    env.srv.stop()
    calls = {p: len(fake.calls_of(p)) for p in ("instagram", "tiktok")}
    again = polled(data=data, keys=keys)
    again.wait_calls("instagram", calls["instagram"] + 2)
    again.wait_calls("tiktok", calls["tiktok"] + 2)
    assert {c.token for c in fake.calls_of("instagram")[calls["instagram"] :]} == {ig_new}
    assert {c.token for c in fake.calls_of("tiktok")[calls["tiktok"] :]} == {tt_new}
    assert len(fake.refreshes) == 2
    assert again.polling(tt_connector)["tokens"]["refresh_error"] is None


UPSTREAM = "upstream-says-7f3a: token 190 for app 42 is invalid"


def test_a_refused_refresh_marks_the_connector_failing_in_the_ingestion_health(
    polled: Callable[..., Polled],
) -> None:
    env = polled()
    influencer = env.influencer("tiktok")
    item = env.content("tiktok", influencer, unique("tt"))
    env.fake.set("tiktok", item, **raw("tiktok", counts(4, 0, 9, 0, 0)))
    refused = {"error": "invalid_grant", "error_description": UPSTREAM, "log_id": "L-77"}
    env.fake.refusals["tiktok"].append(Scripted(401, body=refused))
    old, refresh_token = unique("act.old"), unique("rft.")
    credential = {
        "access_token": old,
        "refresh_token": refresh_token,
        "client_key": "ck-2",
        "expires_in": 120,
    }
    client_secret = unique("tt-client-secret")
    connector = env.connector(
        "tiktok", [credential], {**ROOMY, "curve": FAST}, {"client_secret": client_secret}
    )
    keys = env.srv.keys["acme"]
    operator = operator_key(env.srv)
    entry, text = wait_for(
        lambda: polling_shows(env.srv, operator, connector, "tokens", "refresh_error"),
        15.0,
        "the refused refresh in the health",
    )
    reason = "tiktok token refresh refused: HTTP 401, error invalid_grant (log_id L-77)"
    tokens = entry["polling"]["tokens"]
    assert (tokens["refresh_error"], tokens["refresh_error_detail"]) == (reason, UPSTREAM)
    assert tokens["last_refresh"] is None
    assert entry["polling"]["failing"] is True
    # A read key sees that it fails and why, in Hypemeter's words only.
    seen, read_text = health_of(env.srv, keys.read, connector)
    assert seen["polling"]["tokens"]["refresh_error"] == reason
    assert seen["polling"]["failing"] is True
    assert "refresh_error_detail" not in seen["polling"]["tokens"]
    assert UPSTREAM not in read_text
    for secret in (old, refresh_token, client_secret):
        assert secret not in text and secret not in read_text
    # Polling goes on with the token it has until the platform refuses it.
    env.wait_totals(influencer, {"likes": 4})
    assert {c.token for c in env.calls("tiktok")} == {old}


def test_upstream_error_bodies_show_to_admin_keys_only(polled: Callable[..., Polled]) -> None:
    env = polled()
    influencer = env.influencer("x")
    item = env.content("x", influencer, unique("x"))
    env.fake.set("x", item, **raw("x", counts(1, 0, 10, 0, 0)))
    env.fake.script("x", Scripted(403, body={"title": "Forbidden", "detail": UPSTREAM}))
    connector = env.connector("x", [unique("bearer")], {**ROOMY, "curve": FAST})
    keys = env.srv.keys["acme"]
    operator = operator_key(env.srv)
    entry, _ = wait_for(
        lambda: polling_shows(env.srv, operator, connector, "last_error"),
        15.0,
        "the 403 in the health",
    )
    assert entry["polling"]["last_error"] == "x answered 403"
    assert UPSTREAM in entry["polling"]["last_error_detail"]
    seen, read_text = health_of(env.srv, keys.read, connector)
    assert seen["polling"]["last_error"] == "x answered 403"
    assert "last_error_detail" not in seen["polling"]
    assert UPSTREAM not in read_text
