// Hypemeter dashboard: plain JavaScript over the public API (REST, and WebSocket with a
// stream token). The read key lives in session storage only; it travels in the
// Authorization header, never in a URL the server sees.
"use strict";

const KEY_STORE = "hypemeter.readKey";
const REFRESH_MS = 5000;
const RANGES = [["1h", "1 h"], ["24h", "24 h"], ["7d", "7 d"], ["30d", "30 d"]];
const GRAINS = ["auto", "minute", "hour", "day"];
const OVERVIEW_METRICS = ["likes", "comments", "shares", "views", "clicks", "conversions"];
const INFLUENCER_CHARTS = ["likes", "comments", "shares", "views", "engagement_rate", "followers"];
const INFLUENCER_METRICS = [
  "likes", "comments", "shares", "saves", "views", "followers",
  "engagement", "engagement_rate", "follower_growth", "follower_growth_pct",
];
const CAMPAIGN_METRICS = [
  "likes", "comments", "shares", "views", "clicks", "impressions", "conversions",
  "engagement", "ctr", "conversion_rate", "emv",
];
const LABELS = {
  likes: "Likes", comments: "Comments", shares: "Shares", saves: "Saves", views: "Views",
  clicks: "Clicks", impressions: "Impressions", conversions: "Conversions",
  followers: "Followers", engagement: "Engagement", engagement_rate: "Engagement rate %",
  follower_growth: "Follower growth", follower_growth_pct: "Follower growth %",
  ctr: "CTR %", conversion_rate: "Conversion rate %", emv: "Earned media value",
};
const COLORS = ["#1f4fd1", "#c2410c", "#17663a", "#7c3aed", "#a4161a", "#0e7490"];

const state = { key: null, cleanup: [] };
const $ = (selector, root = document) => root.querySelector(selector);

// -- formatting ------------------------------------------------------------------------

const numberFormat = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });
function fmt(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return typeof value === "number" ? numberFormat.format(value) : String(value);
}
function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
function minuteKey(iso) {
  return Math.floor(Date.parse(iso) / 60000) * 60000;
}
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// -- the API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

async function api(path, params = {}, init = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  let response;
  try {
    response = await fetch(url, {
      ...init,
      headers: { Authorization: `Bearer ${state.key}`, Accept: "application/json", ...(init.headers || {}) },
    });
  } catch (exc) {
    showBanner("The Hypemeter server cannot be reached. Retrying…");
    throw new ApiError(0, "The server cannot be reached");
  }
  hideBanner();
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    const message = body.error ? body.error.message : `refused (${response.status})`;
    if (response.status === 401) signOut(`That key was not accepted: ${message}`);
    throw new ApiError(response.status, message);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = body.error || {};
    throw new ApiError(response.status, error.message || `HTTP ${response.status}`, error.field);
  }
  return response.json();
}

function showBanner(text) {
  const banner = $("#banner");
  banner.textContent = text;
  banner.hidden = false;
}
function hideBanner() {
  $("#banner").hidden = true;
}

// -- live updates over a WebSocket with a stream token -----------------------------------

class LiveStream {
  // One WebSocket for one filter: a short-lived stream token (asked for with the read key)
  // opens it; it reconnects with a new token when the connection drops.
  constructor(filter, metrics, handlers) {
    this.filter = filter;
    this.metrics = metrics;
    this.handlers = handlers;
    this.closed = false;
    this.retry = 1000;
    this.socket = null;
    this.open();
  }

  async open() {
    if (this.closed) return;
    let grant;
    try {
      grant = await api("/v1/metrics/subscribe", {}, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        // The right to tail raw events (comment text) only where the page shows them.
        body: JSON.stringify({
          ...this.filter, metrics: this.metrics, granularity: "minute",
          tail: Boolean(this.handlers.event),
        }),
      });
    } catch (exc) {
      this.later();
      return;
    }
    if (this.closed) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${grant.stream_url}`);
    this.socket = socket;
    socket.onopen = () => {
      this.retry = 1000;
      setLive(true);
      socket.send(JSON.stringify({
        op: "subscribe", id: "figures", filter: this.filter, metrics: this.metrics,
        granularity: "minute",
      }));
      if (this.handlers.event) {
        socket.send(JSON.stringify({ op: "tail", id: "tail", filter: this.filter }));
      }
    };
    socket.onmessage = (message) => {
      const body = JSON.parse(message.data);
      const handler = this.handlers[body.type];
      if (handler) handler(body);
    };
    socket.onclose = () => {
      if (this.socket === socket) this.socket = null;
      if (!this.closed) {
        setLive(false);
        this.later();
      }
    };
  }

  later() {
    if (this.closed) return;
    setTimeout(() => this.open(), this.retry);
    this.retry = Math.min(this.retry * 2, 15000);
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close(1000, "page left");
  }
}

function setLive(on) {
  const live = $("#live");
  live.className = `live ${on ? "on" : "off"}`;
  live.textContent = on ? "live" : "reconnecting…";
}

// -- building blocks ---------------------------------------------------------------------

function tiles(names, label = (n) => LABELS[n] || n) {
  return el("div", { class: "tiles" }, names.map((name) =>
    el("div", { class: "tile", "data-tile": name },
      el("div", { class: "label", text: label(name) }),
      el("div", { class: "value", text: "–" }))));
}
function setTile(root, name, value) {
  const tile = $(`[data-tile="${name}"] .value`, root);
  if (tile) tile.textContent = fmt(value);
}

function card(title, ...body) {
  return el("section", { class: "card" }, el("div", { class: "card-head" }, el("h2", { text: title })), ...body);
}

// Spreadsheets run a cell that begins with =, +, -, @, a tab or a carriage return as a formula,
// and comments come from anyone: such text gets a leading ' (the server's CSV does the same).
// Numbers, and text that is a plain number, stay as they are.
const FORMULA_START = /^[=+\-@\t\r]/;
const PLAIN_NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function csvCell(value) {
  let text = value === null || value === undefined ? "" : Array.isArray(value) ? value.join(";") : String(value);
  if (typeof value !== "number" && FORMULA_START.test(text) && !PLAIN_NUMBER.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

// A table whose rows can be downloaded as CSV; `columns` are [field, label, kind].
function dataTable(name, title, columns, emptyText = "No data yet.") {
  const body = el("tbody");
  const table = el("table", { "data-table": name },
    el("caption", { class: "note", text: "" }),
    el("thead", {}, el("tr", {}, columns.map(([, label, kind]) =>
      el("th", { scope: "col", class: kind === "num" ? "num" : null, text: label })))),
    body);
  let rows = [];
  const download = el("button", {
    type: "button", class: "quiet", "data-csv": name, text: "Download CSV",
    onclick: () => {
      const lines = [columns.map(([field]) => csvCell(field)).join(",")];
      for (const row of rows) lines.push(columns.map(([field]) => csvCell(row[field])).join(","));
      const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
      const link = el("a", { href: URL.createObjectURL(blob), download: `${name}.csv` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    },
  });
  const section = el("section", { class: "card" },
    el("div", { class: "card-head" }, el("h2", { text: title }), download),
    el("div", { class: "table-wrap" }, table));
  section.update = (newRows, render = {}) => {
    rows = newRows;
    body.replaceChildren();
    if (!rows.length) {
      body.append(el("tr", {}, el("td", { class: "empty", colspan: columns.length, text: emptyText })));
    }
    for (const row of rows) {
      body.append(el("tr", {}, columns.map(([field, , kind]) => {
        const cell = el("td", { class: kind === "num" ? "num" : null });
        const custom = render[field];
        if (custom) cell.append(custom(row[field], row));
        else cell.textContent = kind === "num" ? fmt(row[field]) : kind === "time" ? when(row[field]) : fmt(Array.isArray(row[field]) ? row[field].join(", ") : row[field]);
        return cell;
      })));
    }
    table.dataset.rows = String(rows.length);
  };
  section.fail = (message) => {
    rows = [];
    body.replaceChildren(el("tr", {}, el("td", { class: "error", colspan: columns.length, text: message })));
  };
  return section;
}

function chartBox(name, small = false) {
  return el("div", { class: small ? "chart small" : "chart", "data-chart": name, role: "img", "aria-label": name });
}

const PLOT_CONFIG = { responsive: true, displaylogo: false, displayModeBar: false };
function plot(node, traces, layout = {}) {
  const points = traces.reduce((n, t) => Math.max(n, (t.x || []).length), 0);
  const empty = !traces.some((t) => (t.y || []).some((v) => v));
  const annotations = empty
    ? [{ text: "No data yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#4a5361" } }]
    : [];
  window.Plotly.react(node, traces, {
    margin: { l: 48, r: 16, t: 8, b: 36 },
    legend: { orientation: "h", y: -0.2 },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    font: { family: "system-ui, sans-serif", size: 12, color: "#14181f" },
    annotations,
    ...layout,
  }, PLOT_CONFIG);
  node.dataset.points = String(points);
  node.dataset.rendered = String(Number(node.dataset.rendered || 0) + 1);
}

function line(name, x, y, index, extra = {}) {
  return { type: "scatter", mode: "lines", name: LABELS[name] || name, x, y, line: { color: COLORS[index % COLORS.length], width: 2 }, ...extra };
}

function rangeControls(current, onChange, grainCurrent) {
  const group = el("div", { role: "group", "aria-label": "Range" },
    RANGES.map(([value, label]) => el("button", {
      type: "button", "data-range": value, "aria-pressed": String(value === current), text: label,
      onclick: () => onChange({ range: value }),
    })));
  const grain = el("select", { id: "granularity", onchange: (e) => onChange({ grain: e.target.value }) },
    GRAINS.map((g) => el("option", { value: g, selected: g === grainCurrent, text: g })));
  return [group, el("label", { for: "granularity" }, "Granularity", grain)];
}

function every(ms, fn) {
  const timer = setInterval(fn, ms);
  state.cleanup.push(() => clearInterval(timer));
}
function throttled(ms, fn) {
  let last = 0;
  let pending = null;
  const run = () => { pending = null; last = Date.now(); fn(); };
  return () => {
    if (pending) return;
    const wait = last + ms - Date.now();
    pending = setTimeout(run, Math.max(0, wait));
  };
}

function page(name, title, ...content) {
  const main = $("#main");
  main.dataset.page = name;
  main.dataset.state = "loading";
  main.replaceChildren(el("h1", { text: title }), ...content);
  return main;
}
function ready(main) {
  main.dataset.state = "ready";
}

function influencerLink(id) {
  return el("a", { href: `#/influencer/${encodeURIComponent(id)}`, text: id });
}

// -- Overview ----------------------------------------------------------------------------

// Events accepted over the last 60 s: the current minute so far and the share of the
// previous minute that is still within 60 s.
function lastSixtySeconds(minutes) {
  const current = minutes[minutes.length - 1];
  const previous = minutes[minutes.length - 2];
  if (!current) return 0;
  const into = Math.min(1, Math.max(0, (Date.now() - Date.parse(current.ts)) / 60000));
  return Math.round(current.accepted + (previous ? previous.accepted * (1 - into) : 0));
}

async function overview() {
  const live = tiles(["events_per_minute", ...OVERVIEW_METRICS], (n) =>
    n === "events_per_minute" ? "Events / min" : `${LABELS[n]} today`);
  const minutes = chartBox("overview-minutes");
  const top = dataTable("top-influencers", "Top influencers (engagement, 24 h)", [
    ["rank", "#", "num"], ["influencer_id", "Influencer"], ["value", "Engagement", "num"],
  ]);
  const trending = dataTable("trending", "Trending content (24 h)", [
    ["content_id", "Content"], ["interaction_count", "Interactions", "num"],
    ["total_engagement", "Engagement", "num"], ["latest_interaction", "Latest", "time"],
    ["sample_text", "Sample comment"], ["common_tags", "Tags"],
  ]);
  const totalsTable = dataTable("overview-totals", "Today's totals (UTC)", [["metric", "Metric"], ["value", "Value", "num"]]);
  const main = page("overview", "Overview",
    live,
    card("Last hour, per minute", minutes, el("p", { class: "note", text: "Updates live as events arrive." })),
    el("div", { class: "grid" }, top, trending),
    totalsTable);

  let series = null; // { x: [ms], values: {metric: [..]} }
  const draw = throttled(500, () => {
    if (!series) return;
    const x = series.x.map((ms) => new Date(ms).toISOString());
    plot(minutes, OVERVIEW_METRICS.map((m, i) =>
      line(m, x, series.values[m], i, m === "views" ? { yaxis: "y2" } : {})), {
      yaxis: { title: { text: "per minute" }, rangemode: "tozero" },
      yaxis2: { title: { text: "views" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false },
      margin: { l: 48, r: 56, t: 8, b: 36 },
    });
  });
  const totals = {};
  let streamed = false; // once the live stream has sent totals, they are the newest
  const showTotals = () => {
    for (const m of OVERVIEW_METRICS) setTile(live, m, totals[m] ?? 0);
    totalsTable.update(OVERVIEW_METRICS.map((m) => ({ metric: m, value: totals[m] ?? 0 })));
  };
  // Today's totals over REST, so the tiles hold numbers before the stream's snapshot.
  const loadTotals = async () => {
    const midnight = new Date();
    midnight.setUTCHours(0, 0, 0, 0);
    const answer = await api("/v1/metrics/series", {
      start: midnight.toISOString(), end: new Date(midnight.getTime() + 2 * 86400000).toISOString(),
      granularity: "day", metrics: OVERVIEW_METRICS.join(","),
    });
    if (streamed) return;
    Object.assign(totals, answer.totals);
    showTotals();
  };

  const loadSeries = async () => {
    const answer = await api("/v1/metrics/series", { period: "1h", granularity: "minute", metrics: OVERVIEW_METRICS.join(",") });
    series = { x: answer.series.map((p) => Date.parse(p.ts)), values: {} };
    for (const m of OVERVIEW_METRICS) series.values[m] = answer.series.map((p) => p[m] || 0);
    draw();
  };
  const addDeltas = (deltas) => {
    if (!series) return;
    for (const delta of deltas) {
      const at = minuteKey(delta.ts);
      let index = series.x.indexOf(at);
      if (index < 0 && at > series.x[series.x.length - 1]) {
        series.x.push(at);
        for (const m of OVERVIEW_METRICS) series.values[m].push(0);
        while (series.x.length > 60) {
          series.x.shift();
          for (const m of OVERVIEW_METRICS) series.values[m].shift();
        }
        index = series.x.length - 1;
      }
      if (index < 0) continue;
      for (const m of OVERVIEW_METRICS) {
        if (typeof delta[m] === "number") series.values[m][index] += delta[m];
      }
    }
    draw();
  };
  const loadTables = async () => {
    const [leaders, content, health] = await Promise.all([
      api("/v1/leaderboard", { metric: "engagement", period: "24h", limit: 10 }),
      api("/v1/content/trending", { hours_back: 24, min_interactions: 1, limit: 10 }),
      api("/v1/ingestion/health"),
    ]);
    top.update(leaders.data, { influencer_id: influencerLink });
    trending.update(content.data);
    setTile(live, "events_per_minute", lastSixtySeconds(health.minutes));
  };
  const refreshTables = throttled(REFRESH_MS, () => loadTables().catch(() => {}));

  const stream = new LiveStream({}, OVERVIEW_METRICS, {
    snapshot: (body) => { streamed = true; Object.assign(totals, body.totals); showTotals(); },
    update: (body) => {
      streamed = true;
      Object.assign(totals, body.totals);
      showTotals();
      addDeltas(body.deltas || []);
      refreshTables();
    },
  });
  state.cleanup.push(() => stream.close());
  every(REFRESH_MS, () => loadTables().catch(() => {}));
  try {
    await Promise.all([loadSeries(), loadTables(), loadTotals()]);
  } catch (exc) {
    if (exc.status === 401) return;
    showBanner(`Overview could not load: ${exc.message}`);
  }
  ready(main);
}

// -- Influencer --------------------------------------------------------------------------

// The picker and range controls of the influencer and campaign pages. Null, once the
// empty state is shown, when there is nothing to pick yet.
function picked(name, label, ids, id, params, defaultRange, emptyText) {
  const range = params.get("range") || defaultRange;
  const grain = params.get("grain") || "auto";
  if (!id && ids.length) id = ids[0];
  if (id && !ids.includes(id)) ids.unshift(id);
  const go = (change) => navigate(name, change.id ?? id, { range: change.range || range, grain: change.grain || grain });
  const select = el("select", { id: `pick-${name}`, onchange: (e) => go({ id: e.target.value }) },
    ids.length ? ids.map((o) => el("option", { value: o, selected: o === id, text: o }))
      : [el("option", { value: "", text: "none yet" })]);
  const controls = el("div", { class: "controls" },
    el("label", { for: `pick-${name}` }, label, select), rangeControls(range, go, grain));
  if (!id) {
    ready(page(name, label, controls, el("p", { class: "empty", text: emptyText })));
    return null;
  }
  return { id, range, grain, controls };
}

// The first load of a page; a refusal of the API shows in the page, which stays usable.
async function firstLoad(main, load) {
  try {
    await load();
  } catch (exc) {
    if (exc.status === 401) return;
    main.append(el("p", { class: "error", role: "alert", text: `The API refused this view: ${exc.message}${exc.field ? ` (${exc.field})` : ""}` }));
  }
  ready(main);
}

async function influencer(chosen, params) {
  const known = await api("/v1/leaderboard", { metric: "engagement", period: "30d", limit: 200 });
  const pick = picked("influencer", "Influencer", known.data.map((row) => row.influencer_id), chosen, params, "24h",
    "No influencer has any engagement yet. Send events to /v1/events and they appear here.");
  if (!pick) return;
  const { id, range, grain, controls } = pick;
  const summary = tiles(["likes", "comments", "shares", "views", "engagement_rate", "follower_growth", "follower_growth_pct"]);
  const charts = INFLUENCER_CHARTS.map((m) => card(LABELS[m], chartBox(`influencer-${m}`, true)));
  const platformChart = chartBox("influencer-platforms", true);
  const platforms = dataTable("influencer-platforms", "Platform breakdown (engagement)", [["key", "Platform"], ["value", "Engagement", "num"]]);
  const seriesTable = dataTable("influencer-series", "Per bucket", [["ts", "Bucket (UTC)"], ...INFLUENCER_METRICS.map((m) => [m, LABELS[m] || m, "num"])]);
  const comments = el("ul", { class: "comments", "data-list": "comments", "aria-live": "polite" },
    el("li", { class: "empty", text: "Waiting for comments…" }));
  const main = page("influencer", `Influencer ${id}`, controls, summary,
    el("div", { class: "grid small" }, charts),
    el("div", { class: "grid" }, card("Platforms", platformChart), platforms),
    el("div", { class: "grid" }, card("Live comments", comments), seriesTable));
  main.dataset.range = range;
  main.dataset.asked = `${range}/${grain}`;

  const load = async () => {
    const [answer, split] = await Promise.all([
      api(`/v1/influencers/${encodeURIComponent(id)}/metrics`, { period: range, granularity: grain, metrics: INFLUENCER_METRICS.join(",") }),
      api("/v1/metrics/aggregate", { metric: "engagement", group_by: "platform", influencer_id: id, period: range }),
    ]);
    main.dataset.granularity = answer.granularity;
    for (const m of ["likes", "comments", "shares", "views", "engagement_rate", "follower_growth", "follower_growth_pct"]) {
      setTile(summary, m, answer.totals[m]);
    }
    const x = answer.series.map((p) => p.ts);
    INFLUENCER_CHARTS.forEach((m, i) => {
      const node = $(`[data-chart="influencer-${m}"]`, main);
      const kind = m === "engagement_rate" || m === "followers" ? line(m, x, answer.series.map((p) => p[m]), i, { connectgaps: true })
        : { type: "bar", name: LABELS[m], x, y: answer.series.map((p) => p[m]), marker: { color: COLORS[i] } };
      plot(node, [kind], { showlegend: false });
    });
    plot(platformChart, [{ type: "bar", x: split.data.map((r) => r.key), y: split.data.map((r) => r.value), marker: { color: COLORS[0] } }], { showlegend: false });
    platforms.update(split.data);
    seriesTable.update(answer.series.slice().reverse());
  };
  const reload = throttled(REFRESH_MS, () => load().catch(() => {}));
  const shown = [];
  const stream = new LiveStream({ influencer_id: id }, ["likes", "comments", "shares"], {
    update: () => reload(),
    event: (body) => {
      for (const event of body.events) {
        if (event.metric !== "comments" || !event.text) continue;
        shown.unshift(event);
      }
      shown.splice(20);
      comments.replaceChildren(...shown.map((event) => el("li", {},
        el("div", { text: event.text }),
        el("div", { class: "meta", text: `${event.platform} · ${event.content_id || "–"} · ${event.user_id || "anonymous"} · ${when(event.ts)}` }))));
    },
  });
  state.cleanup.push(() => stream.close());
  await firstLoad(main, load);
}

// -- Campaign ----------------------------------------------------------------------------

async function campaign(chosen, params) {
  const known = await api("/v1/metrics/aggregate", { metric: "engagement", group_by: "campaign", period: "30d", limit: 200 });
  const pick = picked("campaign", "Campaign", known.data.map((row) => row.key), chosen, params, "7d",
    "No campaign has any engagement yet: events carrying a campaign_id appear here.");
  if (!pick) return;
  const { id, range, grain, controls } = pick;
  const summary = tiles(CAMPAIGN_METRICS);
  const chart = chartBox("campaign-series");
  const people = dataTable("campaign-influencers", "Per influencer", [
    ["influencer_id", "Influencer"], ...CAMPAIGN_METRICS.map((m) => [m, LABELS[m] || m, "num"]),
  ]);
  const main = page("campaign", `Campaign ${id}`, controls, summary, card("Engagement, clicks and conversions", chart), people);
  main.dataset.range = range;
  main.dataset.asked = `${range}/${grain}`;
  const load = async () => {
    const answer = await api(`/v1/campaigns/${encodeURIComponent(id)}/metrics`, { period: range, granularity: grain, metrics: CAMPAIGN_METRICS.join(",") });
    main.dataset.granularity = answer.granularity;
    for (const m of CAMPAIGN_METRICS) setTile(summary, m, answer.totals[m]);
    const x = answer.series.map((p) => p.ts);
    plot(chart, ["engagement", "clicks", "conversions"].map((m, i) => line(m, x, answer.series.map((p) => p[m]), i)), {
      yaxis: { rangemode: "tozero" },
    });
    people.update(answer.influencers.map((row) => ({ influencer_id: row.influencer_id, ...row.totals })), { influencer_id: influencerLink });
  };
  const reload = throttled(REFRESH_MS, () => load().catch(() => {}));
  const stream = new LiveStream({ campaign_id: id }, ["likes", "comments", "shares"], { update: () => reload() });
  state.cleanup.push(() => stream.close());
  await firstLoad(main, load);
}

// -- Ingestion health --------------------------------------------------------------------

async function ingestion() {
  const summary = tiles(["accepted", "duplicates", "rejected", "duplicate_rate", "rejected_rate"], (n) => ({
    accepted: "Accepted / min", duplicates: "Duplicates / min", rejected: "Rejected / min",
    duplicate_rate: "Duplicates % (1 h)", rejected_rate: "Rejected % (1 h)",
  })[n]);
  const chart = chartBox("ingestion-minutes");
  const rejections = dataTable("rejections", "Recent rejections", [
    ["at", "When", "time"], ["scope", "Scope"], ["field", "Field"], ["error", "Reason"],
  ], "No rejections. Every event sent was accepted.");
  const letters = dataTable("dead-letters", "Open dead letters", [
    ["id", "Id"], ["platform", "Platform"], ["connector_id", "Connector"], ["received_at", "Received", "time"], ["reasons", "Reasons"],
  ], "No dead letters.");
  const connectors = dataTable("connectors", "Connectors", [
    ["id", "Id"], ["platform", "Platform"], ["status", "Status"], ["deliveries", "Deliveries", "num"],
    ["refused", "Refused", "num"], ["dead_letters", "Dead letters", "num"], ["last_success", "Last success", "time"], ["last_error", "Last error"],
  ], "No connectors configured (an admin adds them at /v1/admin/connectors).");
  const main = page("ingestion", "Ingestion health", summary,
    card("Last hour, per minute", chart, el("p", { class: "note", text: "Counted by the server process that answers." })),
    rejections, el("div", { class: "grid" }, letters, connectors));
  const load = async () => {
    const health = await api("/v1/ingestion/health");
    const done = health.minutes[health.minutes.length - 2] || { accepted: 0, duplicates: 0, rejected: 0 };
    for (const n of ["accepted", "duplicates", "rejected"]) setTile(summary, n, done[n]);
    const seen = health.totals.accepted + health.totals.duplicates + health.totals.rejected;
    setTile(summary, "duplicate_rate", seen ? (100 * health.totals.duplicates) / seen : null);
    setTile(summary, "rejected_rate", seen ? (100 * health.totals.rejected) / seen : null);
    const x = health.minutes.map((m) => m.ts);
    plot(chart, [
      { type: "bar", name: "Accepted", x, y: health.minutes.map((m) => m.accepted), marker: { color: COLORS[2] } },
      { type: "bar", name: "Duplicates", x, y: health.minutes.map((m) => m.duplicates), marker: { color: COLORS[1] } },
      { type: "bar", name: "Rejected", x, y: health.minutes.map((m) => m.rejected), marker: { color: COLORS[4] } },
    ], { barmode: "stack" });
    rejections.update(health.recent_rejections);
    letters.update(health.dead_letters.open);
    connectors.update(health.connectors.map((c) => ({
      id: c.id, platform: c.platform, status: c.disabled ? `disabled: ${c.disabled}` : "enabled",
      ...c.health,
    })));
  };
  every(REFRESH_MS, () => load().catch(() => {}));
  try {
    await load();
  } catch (exc) {
    if (exc.status === 401) return;
    showBanner(`Ingestion health could not load: ${exc.message}`);
  }
  ready(main);
}

// -- sign-in and routing -----------------------------------------------------------------

function signIn(message = "") {
  for (const stop of state.cleanup.splice(0)) stop();
  $("#nav").hidden = true;
  $("#signout").hidden = true;
  $("#live").textContent = "";
  const input = el("input", { id: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const error = el("p", { id: "signin-error", class: "error", role: "alert", text: message });
  const form = el("form", { id: "signin", class: "signin", onsubmit: async (e) => {
    e.preventDefault();
    state.key = input.value.trim();
    try {
      await api("/v1/ingestion/health");
    } catch (exc) {
      if (exc.status !== 401) error.textContent = exc.status === 0 ? "The server cannot be reached." : `Sign-in failed: ${exc.message}`;
      return;
    }
    sessionStorage.setItem(KEY_STORE, state.key);
    if (location.hash === "#/overview") route();
    else location.hash = "#/overview";
  } },
  el("h1", { text: "Sign in" }),
  el("label", { for: "key", text: "Read key" }), input,
  el("button", { type: "submit", text: "Sign in" }), error,
  el("p", { class: "note", text: "Use a key with the read scope. It stays in this browser tab's session storage." }));
  const main = $("#main");
  main.dataset.page = "signin";
  main.dataset.state = "ready";
  main.replaceChildren(form);
  input.focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  state.key = null;
  history.replaceState(null, "", location.pathname);
  signIn(message);
}

function navigate(name, id, params) {
  const query = new URLSearchParams(params).toString();
  location.hash = `#/${name}${id ? `/${encodeURIComponent(id)}` : ""}${query ? `?${query}` : ""}`;
}

const PAGES = { overview, influencer, campaign, ingestion };

async function route() {
  const hash = location.hash;
  if (hash.startsWith("#key=")) {
    // The one-click link: take the key from the fragment, keep it out of the address bar.
    sessionStorage.setItem(KEY_STORE, decodeURIComponent(hash.slice(5)));
    history.replaceState(null, "", `${location.pathname}#/overview`);
  } else if (hash && !hash.startsWith("#/")) {
    return; // an in-page anchor (the skip link)
  }
  state.key = sessionStorage.getItem(KEY_STORE);
  if (!state.key) {
    signIn();
    return;
  }
  for (const stop of state.cleanup.splice(0)) stop();
  const [path, query = ""] = location.hash.slice(2).split("?");
  const [name, ...rest] = path.split("/");
  const show = PAGES[name] ? name : "overview";
  const id = rest.length ? decodeURIComponent(rest.join("/")) : null;
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === show) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    await PAGES[show](id, new URLSearchParams(query));
  } catch (exc) {
    if (exc.status === 401) return;
    const main = $("#main");
    main.dataset.state = "error";
    main.replaceChildren(el("h1", { text: "Something went wrong" }), el("p", { class: "error", role: "alert", text: exc.message }));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#signout").addEventListener("click", () => signOut(""));
  $(".skip").addEventListener("click", (e) => { e.preventDefault(); $("#main").focus(); });
  window.addEventListener("hashchange", route);
  route();
});
