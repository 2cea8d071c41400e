// jobreg live dashboard: list a page, then watch from the list's position; charts, detail, dead letters.
"use strict";

import { $, STATUSES, ORIGINS, asOf, writeClipboard, inputToIso, isoToInput, setTimeZone, timeZone } from "./util.js";
import { Ring, Chart, RateOf, parseMetrics } from "./charts.js";
import { readStream } from "./sse.js";
import * as table from "./table.js";
import { renderDetail } from "./detail.js";
import { initDeadLetters, isOpen as deadOpen, toggle as toggleDead } from "./deadletters.js";

const { view, jobs } = table;
const form = $("filters");
const LISTS = ["project_id", "batch_id", "user_id", "id"];       // comma-separated inputs, repeated params
const SINGLES = ["id__starts_with", "errors", "min_runs", "max_runs"];
const DATES = ["start_date", "end_date"];
const SAMPLE_MS = 2000;

let selected = null;        // id shown in the detail panel
let selectedExtra = {};     // what only GET /api/v2/jobs/{id} has (the sequence)
let source = null;          // AbortController of the open watch stream
let generation = 0;         // bumps on every relist, so stale callbacks do nothing
let lastPosition = "";
const received = [];        // arrival times of recent changes, for the rate

// -- filters and the URL ------------------------------------------------------------------

function filterParams() {
  const p = new URLSearchParams();
  for (const box of form.querySelectorAll("input[type=checkbox]:checked")) p.append(box.name, box.value);
  for (const name of LISTS) {
    for (const v of form.elements[name].value.split(/[\s,]+/)) if (v) p.append(name, v);
  }
  for (const name of SINGLES) {
    const v = form.elements[name].value.trim();
    if (v) p.append(name, v);
  }
  for (const name of DATES) {
    const v = inputToIso(form.elements[name].value);
    if (v) p.append(name, v);
  }
  return p;
}

function loadFromUrl() {
  const p = new URLSearchParams(location.search);
  for (const box of form.querySelectorAll("input[type=checkbox]")) box.checked = p.getAll(box.name).includes(box.value);
  for (const name of LISTS) form.elements[name].value = p.getAll(name).join(", ");
  for (const name of SINGLES) form.elements[name].value = p.get(name) || "";
  for (const name of DATES) form.elements[name].value = isoToInput(p.get(name));
  view.orderBy = p.get("order_by") || "created_at";
  view.direction = p.get("order_by_direction") === "ASC" ? "ASC" : "DESC";
  view.offset = Math.max(0, Number(p.get("offset")) || 0);
  view.limit = [25, 50, 100].includes(Number(p.get("limit"))) ? Number(p.get("limit")) : 100;
  [view.localKey, view.localDir] = (p.get("page_sort") || "").split(":");
  view.localKey = view.localKey || "";
  view.localDir = view.localDir === "DESC" ? "DESC" : "ASC";
  return p;
}

// Everything that makes this view: filters, order, page, open job, open panel.
function saveUrl() {
  const p = filterParams();
  if (view.orderBy !== "created_at") p.set("order_by", view.orderBy);
  if (view.direction !== "DESC") p.set("order_by_direction", view.direction);
  if (view.offset) p.set("offset", String(view.offset));
  if (view.limit !== 100) p.set("limit", String(view.limit));
  if (view.localKey) p.set("page_sort", `${view.localKey}:${view.localDir}`);
  if (selected) p.set("job", selected);
  if (deadOpen()) p.set("view", "dead");
  const q = p.toString();
  history.replaceState(null, "", q ? `?${q}` : location.pathname);
}

function withParams(path, extra) {
  const p = filterParams();
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  const q = p.toString();
  return q ? `${path}?${q}` : path;
}

// -- authentication -----------------------------------------------------------------
// With auth on, every API call carries the operator's bearer token (kept for this tab only).

function authHeaders(extra) {
  const token = sessionStorage.getItem("jobreg-token");
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

function askToken(message) {
  setConn("error", "token needed");
  $("auth").hidden = false;
  $("auth-message").textContent = message;
}

$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("auth-token").value.trim();
  if (token) sessionStorage.setItem("jobreg-token", token);
  $("auth").hidden = true;
  metricsAllowed = true;
  relist();
});

// ``adminOnly``: a 403 means "not an operator", not a bad token, so it does not ask for one.
async function api(path, init = {}, adminOnly = false) {
  const r = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  if (r.status === 401 || (r.status === 403 && !adminOnly)) {
    const body = await r.clone().json().catch(() => ({}));
    askToken(body.message || "This API needs a bearer token.");
  }
  return r;
}

function setConn(state, text) {
  const el = $("conn");
  el.className = `state ${state}`;
  el.textContent = text || state;
}

// -- the detail panel -----------------------------------------------------------------

function showDetail(job) {
  if (job.id !== selected) selectedExtra = {};
  job = { ...job, ...selectedExtra };
  selected = job.id;
  table.setSelected(selected);
  table.markSelected(selected);
  renderDetail(job);
}

async function loadDetail(id) {
  const r = await api(`/api/v2/jobs/${encodeURIComponent(id)}`);
  if (selected !== id) return;
  if (!r.ok) {
    if (!jobs.has(id)) closeDetail(); // a deep link to a job that is not there (or not ours)
    return;
  }
  const full = (await r.json()).data;
  selectedExtra = { sequence: full.sequence };
  showDetail({ ...full, ...(jobs.get(id) || {}) });
}

function openJob(id) {
  selected = id;
  saveUrl();  // the URL names the open job: a deep link
  if (jobs.has(id)) showDetail(jobs.get(id));
  loadDetail(id);
}

function closeDetail() {
  selected = null;
  table.setSelected(null);
  $("detail").hidden = true;
  table.markSelected(null);
  saveUrl();
}

// -- stats, metrics and the charts ----------------------------------------------------

const series = {
  events: new Ring(), changes: new Ring(), lag: new Ring(), pending: new Ring(), query: new Ring(), rtt: new Ring(),
  ...Object.fromEntries(STATUSES.map((s) => [s, new Ring()])),
};
const charts = [
  new Chart($("chart-throughput"), [
    { name: "events/s", cls: "c-events", ring: series.events }, { name: "changes/s", cls: "c-changes", ring: series.changes },
  ]),
  new Chart($("chart-status"), STATUSES.map((s) => ({ name: s.toLowerCase(), cls: `s-${s}`, ring: series[s] }))),
  new Chart($("chart-backlog"), [
    { name: "lag", cls: "c-lag", ring: series.lag }, { name: "pending", cls: "c-pending", ring: series.pending },
  ]),
  new Chart($("chart-latency"), [
    { name: "server", cls: "c-query", ring: series.query }, { name: "round trip", cls: "c-rtt", ring: series.rtt },
  ], "ms"),
];
const eventsRate = new RateOf(), changesRate = new RateOf(), querySum = new RateOf(), queryCount = new RateOf();
let metricsAllowed = true;  // /metrics is for operators; after a 403 the server series stay empty
let changesSeen = 0;

function showStats(body) {
  $("count-total").textContent = body.total.toLocaleString();
  table.setTotal(body.total);
  for (const s of STATUSES) $(`count-${s}`).textContent = body.by_status[s].toLocaleString();
  $("origins").replaceChildren(...ORIGINS.map((o) => {
    const span = document.createElement("span");
    span.append(`${o.toLowerCase()} `);
    const b = document.createElement("b");
    b.id = `origin-${o}`;
    b.textContent = body.by_origin[o].toLocaleString();
    span.appendChild(b);
    return span;
  }));
  const h = body.pipeline;
  $("h-lag").textContent = h.consumer_lag === null ? "?" : h.consumer_lag.toLocaleString();
  $("h-pending").textContent = h.pending.toLocaleString();
  $("h-dead").textContent = h.dead_letters.toLocaleString();
  $("h-dead").classList.toggle("bad", h.dead_letters > 0);
  $("h-log").textContent = `${h.changes_retained.toLocaleString()} changes`;
  if (!lastPosition) $("asof").textContent = asOf(h.changes_position);
}

async function readMetrics() {
  if (!metricsAllowed) return null;
  const r = await api("/metrics", {}, true).catch(() => null);
  if (!r || r.status === 403) { metricsAllowed = r === null; return null; }
  return r.ok ? parseMetrics(await r.text()) : null;
}

async function sample() {
  const gen = generation;
  const started = performance.now();
  let body;
  try {
    const r = await api(withParams("/api/v2/jobs/stats"));
    if (!r.ok) return;
    body = (await r.json()).data;
  } catch (e) {
    return;
  }
  const rtt = performance.now() - started;
  if (gen !== generation) return;
  showStats(body);
  const t = Date.now();
  for (const s of STATUSES) series[s].push(t, body.by_status[s]);
  series.lag.push(t, body.pipeline.consumer_lag);
  series.pending.push(t, body.pipeline.pending);
  series.rtt.push(t, rtt);
  series.changes.push(t, changesRate.next(t, changesSeen));
  const m = await readMetrics();
  const qs = m && querySum.next(t, m.jobreg_query_duration_seconds_sum || 0);
  const qc = m && queryCount.next(t, m.jobreg_query_duration_seconds_count || 0);
  series.events.push(t, m ? eventsRate.next(t, m.jobreg_events_consumed_total || 0) : null);
  series.query.push(t, qs !== null && qc ? (qs / qc) * 1000 : null);
  for (const c of charts) c.draw();
}

// -- list, then watch ---------------------------------------------------------------

async function relist() {
  const gen = ++generation;
  if (source) { source.abort(); source = null; }
  setConn("relisting", "listing");
  $("filter-error").textContent = "";
  table.showOrder();
  let r;
  try {
    r = await api(withParams("/api/v2/jobs", {
      limit: String(view.limit), offset: String(view.offset), order_by: view.orderBy, order_by_direction: view.direction,
    }));
  } catch (e) {
    setConn("error", "API unreachable");
    setTimeout(() => gen === generation && relist(), 3000);
    return;
  }
  if (gen !== generation) return;
  if (r.status === 422) {
    const body = await r.json();
    $("filter-error").textContent = body.detail.map((d) => `${d.loc[d.loc.length - 1]}: ${d.msg}`).join("; ");
    setConn("error", "bad filter");
    return;
  }
  if (r.status === 401 || r.status === 403) return;
  if (!r.ok) {
    setConn("error", `list failed (${r.status})`);
    setTimeout(() => gen === generation && relist(), 3000);
    return;
  }
  const position = r.headers.get("X-Resource-Version") || "";
  const body = await r.json();
  if (gen !== generation) return;
  table.renderAll(body.data);
  table.setTotal(body.pagination.total);
  if (selected) table.markSelected(selected);
  sample();
  watch(gen, position);
}

function watch(gen, position) {
  const controller = new AbortController();
  source = controller;
  const state = { lastId: position, retryMs: 2000 };
  const url = withParams("/api/v2/jobs/watch");

  // Returns false when the stream must not go on.
  const dispatch = (event, data, id) => {
    if (gen !== generation) return false;
    if (event === "gone") { relist(); return false; }     // our position left the change log
    if (event === "expired") { askToken("The token expired: paste a fresh one."); return false; }
    lastPosition = id;
    $("asof").textContent = asOf(id);
    $("asof").title = `change log position ${id}`;
    if (!data) return true;                                // heartbeat: only the position moved
    const msg = JSON.parse(data);
    received.push(performance.now());
    changesSeen += 1;
    if (msg.type === "removed") table.remove(msg.job);
    else table.upsert(msg.job, msg.type === "added");
    if (msg.job.id === selected) showDetail(msg.job);      // the panel follows its job, in the filter or not
    return true;
  };

  (async () => {
    while (gen === generation && !controller.signal.aborted) {
      const next = await readStream(url, authHeaders(), state, controller.signal, dispatch,
        () => gen === generation && setConn("live"));
      if (next === null || gen !== generation || controller.signal.aborted) return;
      if (next === "relist") { relist(); return; }
      if (next === "auth") { askToken("The watch needs a valid token."); return; }
      setConn("connecting", "reconnecting");
      await new Promise((ok) => setTimeout(ok, state.retryMs));
    }
  })();
}

// -- wiring -------------------------------------------------------------------------

let debounce = null;
function filtersChanged() {
  clearTimeout(debounce);
  debounce = setTimeout(() => { view.offset = 0; saveUrl(); relist(); }, 300);
}
form.addEventListener("input", filtersChanged);
form.addEventListener("change", filtersChanged);
form.addEventListener("reset", () => setTimeout(filtersChanged, 0));
form.addEventListener("submit", (e) => { e.preventDefault(); filtersChanged(); });

function reorder() { view.offset = 0; saveUrl(); relist(); }
for (const th of document.querySelectorAll("#jobs th")) {
  th.addEventListener("click", () => {
    if (th.dataset.sort) {
      if (!view.localKey && view.orderBy === th.dataset.sort) view.direction = view.direction === "DESC" ? "ASC" : "DESC";
      else { view.orderBy = th.dataset.sort; view.direction = "DESC"; }
      view.localKey = "";
      reorder();
    } else {
      // Status, origin, project, user, duration, error: the API cannot order by them, so this page is sorted.
      if (view.localKey === th.dataset.local) view.localDir = view.localDir === "ASC" ? "DESC" : "ASC";
      else { view.localKey = th.dataset.local; view.localDir = "ASC"; }
      saveUrl();
      table.showOrder();
      table.resort();
    }
  });
}
$("order-by").addEventListener("change", (e) => { view.orderBy = e.target.value; view.localKey = ""; reorder(); });
$("direction").addEventListener("click", () => { view.direction = view.direction === "DESC" ? "ASC" : "DESC"; reorder(); });
$("limit").addEventListener("change", (e) => { view.limit = Number(e.target.value); reorder(); });
$("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); saveUrl(); relist(); });
$("next").addEventListener("click", () => { view.offset += view.limit; saveUrl(); relist(); });

$("tz").value = timeZone();
$("tz").addEventListener("change", (e) => {
  const dates = DATES.map((n) => inputToIso(form.elements[n].value));
  setTimeZone(e.target.value);
  DATES.forEach((n, i) => { form.elements[n].value = isoToInput(dates[i]); }); // same instants, new zone
  for (const el of document.querySelectorAll(".tzname")) el.textContent = timeZone() === "utc" ? "(UTC)" : "(local)";
  table.resort();
  if (selected && jobs.has(selected)) showDetail(jobs.get(selected));
});

$("rows").addEventListener("click", (e) => {
  const tr = e.target.closest("tr");
  if (tr && jobs.has(tr.dataset.id)) openJob(tr.dataset.id);
});
$("detail-close").addEventListener("click", closeDetail);
$("detail-link").addEventListener("click", async () => {
  // A link that opens this job (and only it: filters would hide it from a colleague's view).
  const url = new URL(location.pathname, location.href);
  url.search = new URLSearchParams({ job: selected || "" }).toString();
  const b = $("detail-link");
  b.dataset.link = url.href;
  b.textContent = (await writeClipboard(url.href)) ? "link copied" : "copy failed";
  setTimeout(() => { b.textContent = "copy link"; }, 1500);
});

initDeadLetters(api, () => sample());

setInterval(() => {
  const now = performance.now();
  while (received.length && now - received[0] > 10000) received.shift();
  $("rate").textContent = `${(received.length / 10).toFixed(1)} changes/s`;
  if (lastPosition) $("asof").textContent = asOf(lastPosition);
}, 1000);
setInterval(sample, SAMPLE_MS);  // counts, pipeline health and the charts move without job changes too

const initial = loadFromUrl();
for (const el of document.querySelectorAll(".tzname")) el.textContent = timeZone() === "utc" ? "(UTC)" : "(local)";
if (initial.get("view") === "dead") toggleDead(true);
if (initial.get("job")) openJob(initial.get("job"));
relist();
