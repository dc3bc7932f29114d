"use strict";
// The pool dashboard: pool health per tick, accounts nearest liquidation, margin efficiency by
// model, breaker and oracle state, live over the WebSocket event stream.
// window.dashboard exposes the state for tests and for people poking at the console.
const dashboard = (window.dashboard = {
  ready: false, tick: 0, healthUpdates: 0, eventsSeen: 0, refreshes: 0, error: null,
});
const MAX_POINTS = 20000;
const HEALTH_TRACES = [
  {key: "liquidatable", name: "liquidatable", color: "#c0392b", axis: "y"},
  {key: "margin_calls", name: "margin calls", color: "#d68910", axis: "y"},
  {key: "near_liquidation", name: "near liquidation", color: "#7d3c98", axis: "y"},
  {key: "coverage_ratio", name: "coverage ratio", color: "#2e5aac", axis: "y2"},
];
const PLOT_CONFIG = {displaylogo: false, responsive: true};
let apiKey = null;

function takeKey() {
  const match = location.hash.match(/key=([^&]+)/);
  if (match) {
    sessionStorage.setItem("margin-engine-key", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("margin-engine-key");
}

// Text from the store (account ids, asset and symbol names, event kinds) as HTML text: an
// account id is whatever the venue's book says, "<img onerror=...>" included.
const ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function showError(text) {
  dashboard.error = text;
  document.getElementById("error").textContent = text || "";
}

async function api(path) {
  const response = await fetch(path, {headers: {Authorization: `Bearer ${apiKey}`}});
  const body = await response.json();
  if (!response.ok) {
    throw new Error(`${path}: ${body.status} ${body.title}: ${body.detail}`);
  }
  return body;
}

const number = (value, digits = 2) =>
  value === null || value === undefined ? "-" :
    Number(value).toLocaleString("en-US", {maximumFractionDigits: digits,
                                           minimumFractionDigits: digits});
const integer = (value) => value === null || value === undefined ? "-" :
  Number(value).toLocaleString("en-US");

async function loadHistory() {
  let points = [];
  let after = 0;
  for (;;) {
    const page = await api(`/v1/pool/history?after=${after}&limit=5000`);
    points = points.concat(page.points);
    if (page.next_after === null) break;
    after = page.next_after;
  }
  return points.slice(-MAX_POINTS);
}

function drawHealth(points) {
  const traces = HEALTH_TRACES.map((t) => ({
    type: "scatter", mode: "lines", name: t.name, yaxis: t.axis,
    line: {color: t.color, width: t.axis === "y2" ? 2 : 1.5},
    x: points.map((p) => p.time), y: points.map((p) => p[t.key]),
    customdata: points.map((p) => p.tick),
    hovertemplate: `%{y}<br>tick %{customdata}<extra>${t.name}</extra>`,
  }));
  Plotly.newPlot("health-chart", traces, {
    margin: {t: 10, r: 60, b: 40, l: 50}, legend: {orientation: "h", y: 1.12},
    xaxis: {type: "date", title: {text: "tick time (UTC)"}},
    yaxis: {title: {text: "accounts"}, rangemode: "tozero"},
    yaxis2: {title: {text: "coverage ratio"}, overlaying: "y", side: "right",
             rangemode: "tozero", showgrid: false},
  }, PLOT_CONFIG);
}

function extendHealth(points) {
  if (!points.length) return;
  Plotly.extendTraces("health-chart", {
    x: HEALTH_TRACES.map(() => points.map((p) => p.time)),
    y: HEALTH_TRACES.map((t) => points.map((p) => p[t.key])),
    customdata: HEALTH_TRACES.map(() => points.map((p) => p.tick)),
  }, HEALTH_TRACES.map((_, i) => i), MAX_POINTS);
}

function showHealth(point) {
  if (!point) return;
  dashboard.tick = point.tick;
  document.getElementById("where").textContent =
    `tick ${integer(point.tick)} at ${point.time.replace("T", " ").replace("Z", " UTC")}`;
  document.getElementById("kpi-coverage").textContent = number(point.coverage_ratio);
  document.getElementById("kpi-liquidatable").textContent = integer(point.liquidatable);
  document.getElementById("kpi-calls").textContent = integer(point.margin_calls);
  document.getElementById("kpi-near").textContent = integer(point.near_liquidation);
  const rows = Object.entries(point.collateral_by_asset || {})
    .sort((a, b) => b[1] - a[1])
    .map(([asset, value]) =>
      `<tr><td>${esc(asset)}</td><td class="num">${esc(number(value, 0))}</td></tr>`);
  rows.push(`<tr><td>concentration</td><td class="num">${esc(number(point.concentration, 3))}` +
            "</td></tr>");
  document.querySelector("#collateral tbody").innerHTML = rows.join("");
}

function drawRisk(risk) {
  const items = risk.at_risk.slice().reverse();  // nearest at the top
  Plotly.react("risk-chart", [{
    type: "bar", orientation: "h",
    y: items.map((a) => esc(`${a.account} ${a.underlying}`)),  // (plotly reads tags in text)
    x: items.map((a) => a.distance_pct),
    marker: {color: items.map((a) => (Math.abs(a.distance_pct) < 2 ? "#c0392b" :
                                      Math.abs(a.distance_pct) < 10 ? "#d68910" : "#2e5aac"))},
    text: items.map((a) => `${number(a.distance_pct)} % (${number(a.liquidation_price)})`),
    textposition: "auto", customdata: items.map((a) => a.health),
    hovertemplate: "%{y}: %{x:.2f} %<br>health %{customdata:.3f}<extra></extra>",
  }], {
    margin: {t: 10, r: 20, b: 40, l: 110},
    xaxis: {title: {text: `% move of the index to liquidation (${integer(risk.liquidatable)} ` +
                          `already liquidatable)`}, zeroline: true},
  }, PLOT_CONFIG);
}

function drawEfficiency(result) {
  const models = result.models;
  Plotly.react("efficiency-chart", [{
    type: "bar", x: models.map((m) => m.model), y: models.map((m) => m.efficiency),
    marker: {color: "#2e5aac"}, text: models.map((m) => `${number(m.efficiency, 1)}x`),
    textposition: "outside", customdata: models.map((m) => m.initial_margin),
    hovertemplate: "%{x}: %{y:.2f}x<br>IM %{customdata:,.0f} USD<extra></extra>",
  }], {margin: {t: 20, r: 20, b: 40, l: 50},
        yaxis: {title: {text: "gross notional / IM"}, rangemode: "tozero"}},
  PLOT_CONFIG);
}

function drawState(state) {
  const breaker = state.breaker;
  const flagged = Object.keys(state.oracle.flagged);
  const kpiBreaker = document.getElementById("kpi-breaker");
  kpiBreaker.textContent = breaker.on ? `on x${number(breaker.multiplier, 3)}` : "off";
  kpiBreaker.className = "value " + (breaker.on ? "bad" : "good");
  const kpiOracle = document.getElementById("kpi-oracle");
  kpiOracle.textContent = flagged.length ? `flagged: ${flagged.join(", ")}` : "agreeing";
  kpiOracle.className = "value " + (flagged.length ? "warn" : "good");
  const rows = [
    ["breaker multiplier", number(breaker.multiplier, 3)],
    ["breaker last change", breaker.last_change ?
      `${breaker.last_change.kind} at tick ${integer(breaker.last_change.tick)}` : "none"],
    ["oracle flagged", flagged.length ? flagged.join(", ") : "none"],
    ...Object.entries(state.prices).map(([symbol, price]) => [`${symbol} index`, number(price)]),
    ["last event", integer(state.last_event_seq)],
  ];
  document.querySelector("#state tbody").innerHTML = rows
    .map(([k, v]) => `<tr><td>${esc(k)}</td><td class="num">${esc(v)}</td></tr>`).join("");
}

function addEvents(events) {
  const body = document.getElementById("event-rows");
  for (const e of events) {
    const row = document.createElement("tr");
    const cls = e.kind === "liquidation" ? "bad" : e.kind === "margin_call" ? "warn" :
      e.kind === "recovery" ? "good" : "";
    const who = e.account || e.payload.symbol || (e.payload.key_id ? "key " + e.payload.key_id : "");
    row.innerHTML = `<td class="num">${esc(e.tick || "-")}</td>` +
      `<td class="${cls}">${esc(e.kind)}</td><td>${esc(who)}</td>`;
    body.insertBefore(row, body.firstChild);
  }
  while (body.children.length > 60) body.removeChild(body.lastChild);
  dashboard.eventsSeen += events.length;
}

async function refreshPanels() {
  const [risk, efficiency, state] = await Promise.all([
    api("/v1/pool/at-risk?limit=10"), api("/v1/pool/efficiency"), api("/v1/pool/state")]);
  drawRisk(risk);
  drawEfficiency(efficiency);
  drawState(state);
  dashboard.refreshes += 1;
}

let refreshTimer = null;
function scheduleRefresh() {  // at most one refresh of the computed panels every 3 s
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try { await refreshPanels(); } catch (err) { showError(err.message); }
  }, 3000);
}

function connect(afterSeq) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/stream?health=true` +
                               `&after=${afterSeq}&tick=${dashboard.tick}`);
  const live = document.getElementById("live");
  socket.onopen = () => socket.send(JSON.stringify({api_key: apiKey}));
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "ready") {
      live.textContent = "live";
      live.className = "on";
    } else if (data.type === "health") {
      extendHealth(data.points);
      showHealth(data.points[data.points.length - 1]);
      dashboard.healthUpdates += data.points.length;
      scheduleRefresh();
    } else if (data.type === "events") {
      addEvents(data.events);
      dashboard.lastEventSeq = data.events[data.events.length - 1].seq;
      scheduleRefresh();
    } else if (data.type === "error") {
      showError(`${data.title}: ${data.detail}`);
    }
  };
  socket.onclose = () => {
    live.textContent = "disconnected: retrying";
    live.className = "";
    setTimeout(() => connect(dashboard.lastEventSeq || afterSeq), 3000);
  };
}

async function start() {
  apiKey = takeKey();
  if (!apiKey) {
    document.getElementById("login").style.display = "block";
    document.getElementById("login-form").onsubmit = (event) => {
      event.preventDefault();
      sessionStorage.setItem("margin-engine-key", document.getElementById("key").value.trim());
      location.reload();
    };
    return;
  }
  try {
    const [points, state] = await Promise.all([loadHistory(), api("/v1/pool/state")]);
    drawHealth(points);
    showHealth(points[points.length - 1]);
    drawState(state);
    const recent = Math.max(0, state.last_event_seq - 30);
    dashboard.lastEventSeq = recent;
    await refreshPanels();
    connect(recent);
    dashboard.ready = true;
  } catch (err) {
    showError(err.message);
  }
}

start();
