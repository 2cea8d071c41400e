// jobreg live dashboard: list, then watch from the list's position (no build step, no dependencies).
"use strict";

const MAX_ROWS = 100;
const STATUSES = ["PENDING", "RUNNING", "CANCELING", "DONE", "ERROR", "CANCELED"];
const ORIGINS = ["CLIENT", "AZURE", "OVH", "UNKNOWN"];

const $ = (id) => document.getElementById(id);
const form = $("filters");
const rowsEl = $("rows");

let jobs = new Map();       // id -> job, the rows on screen
let selected = null;        // id shown in the detail panel
let source = null;          // AbortController of the open watch stream
let generation = 0;         // bumps on every relist, so stale callbacks do nothing
let statsTimer = null;
const received = [];        // arrival times of recent changes, for the rate

// -- filters ------------------------------------------------------------------------

function filterParams() {
  const p = new URLSearchParams();
  for (const box of form.querySelectorAll("input[type=checkbox]:checked")) p.append(box.name, box.value);
  for (const name of ["project_id", "batch_id", "user_id", "id__starts_with", "errors"]) {
    const v = form.elements[name].value.trim();
    if (v) p.append(name, v);
  }
  return p;
}

function loadFiltersFromUrl() {
  const p = new URLSearchParams(location.search);
  for (const box of form.querySelectorAll("input[type=checkbox]")) box.checked = p.getAll(box.name).includes(box.value);
  for (const name of ["project_id", "batch_id", "user_id", "id__starts_with", "errors"]) form.elements[name].value = p.get(name) || "";
}

function withParams(path, extra) {
  const p = filterParams();
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  const q = p.toString();
  return q ? `${path}?${q}` : path;
}

// -- authentication -----------------------------------------------------------------
// With auth on, every API call carries the operator's bearer token (kept for this tab only).
// That is also why the watch is read with fetch() rather than EventSource: EventSource
// cannot send an Authorization header, and a token in the URL would end up in logs.

function authHeaders(extra) {
  const token = sessionStorage.getItem("jobreg-token");
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

function askToken(message) {
  setConn("error", "token needed");
  const box = $("auth");
  box.hidden = false;
  $("auth-message").textContent = message;
}

$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("auth-token").value.trim();
  if (token) sessionStorage.setItem("jobreg-token", token);
  $("auth").hidden = true;
  relist();
});

async function api(path) {
  const r = await fetch(path, { headers: authHeaders() });
  if (r.status === 401 || r.status === 403) {
    const body = await r.json().catch(() => ({}));
    askToken(body.message || "This API needs a bearer token.");
  }
  return r;
}

// -- rendering ----------------------------------------------------------------------

const short = (uuid) => (uuid ? uuid.slice(0, 8) : "");
const when = (ts) => (ts ? ts.slice(0, 19).replace("T", " ") : "");

function compare(a, b) {
  // The list's order: created_at, then id, both descending.
  if (a.created_at !== b.created_at) return a.created_at < b.created_at ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}

function renderRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.id = job.id;
  tr.dataset.status = job.status;
  const id = cell(short(job.id), "mono id");
  id.title = job.id;
  const status = document.createElement("td");
  status.className = "status";
  const badge = document.createElement("span");
  badge.className = `badge ${job.status}`;
  badge.textContent = job.status;
  status.appendChild(badge);
  const project = cell(short(job.project_id), "mono");
  project.title = job.project_id;
  tr.append(id, status, cell(job.origin), project, cell(job.user_id), cell(String(job.runs), "num"),
            cell(when(job.created_at)), cell(when(job.updated_at)));
  if (job.id === selected) tr.classList.add("selected");
  return tr;
}

function flash(tr) {
  tr.classList.add("flash");
  requestAnimationFrame(() => requestAnimationFrame(() => tr.classList.remove("flash")));
}

function renderAll() {
  const sorted = [...jobs.values()].sort(compare);
  rowsEl.replaceChildren(...sorted.map(renderRow));
  $("shown").textContent = String(jobs.size);
}

function rowOf(id) {
  return rowsEl.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
}

function upsert(job, isNew) {
  const old = rowOf(job.id);
  if (!old) {
    // Keep the newest MAX_ROWS by creation; an older job than the last row stays off screen.
    const sorted = [...jobs.values()].sort(compare);
    if (jobs.size >= MAX_ROWS && compare(job, sorted[sorted.length - 1]) > 0) return;
    jobs.set(job.id, job);
    const tr = renderRow(job);
    const next = sorted.find((j) => compare(job, j) < 0);
    rowsEl.insertBefore(tr, next ? rowOf(next.id) : null);
    if (isNew) flash(tr);
    while (jobs.size > MAX_ROWS) {
      const last = [...jobs.values()].sort(compare).pop();
      jobs.delete(last.id);
      rowOf(last.id)?.remove();
    }
  } else {
    jobs.set(job.id, job);
    const tr = renderRow(job);
    old.replaceWith(tr);
    flash(tr);
  }
  $("shown").textContent = String(jobs.size);
  if (job.id === selected) showDetail(job);
}

function remove(job) {
  if (jobs.delete(job.id)) rowOf(job.id)?.remove();
  $("shown").textContent = String(jobs.size);
  if (job.id === selected) showDetail(job); // still shown, now outside the filter
}

// What only GET /api/v2/jobs/{id} has (the sequence), kept for the job shown in the panel.
let selectedExtra = {};

function detailValue(k, v) {
  const dd = document.createElement("dd");
  if (k === "results_link" && typeof v === "string" && /^https?:\/\//i.test(v)) {
    const a = document.createElement("a"); // the registry only accepts absolute http(s) links
    a.href = v;
    a.textContent = v;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    dd.appendChild(a);
  } else if (v !== null && typeof v === "object") {
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(v, null, 2);
    dd.appendChild(pre);
  } else {
    dd.textContent = v === null || v === undefined ? "—" : String(v);
  }
  return dd;
}

async function loadDetail(id) {
  const r = await api(`/api/v2/jobs/${encodeURIComponent(id)}`);
  if (!r.ok || selected !== id) return;
  const full = (await r.json()).data;
  selectedExtra = { sequence: full.sequence };
  showDetail({ ...full, ...(jobs.get(id) || {}) });
}

function showDetail(job) {
  if (job.id !== selected) selectedExtra = {};
  job = { ...job, ...selectedExtra };
  selected = job.id;
  for (const tr of rowsEl.querySelectorAll("tr.selected")) tr.classList.remove("selected");
  rowOf(job.id)?.classList.add("selected");
  const dl = $("detail-fields");
  dl.replaceChildren();
  for (const [k, v] of Object.entries(job)) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = detailValue(k, v);
    dd.dataset.field = k;
    dl.append(dt, dd);
  }
  $("detail").hidden = false;
}

function setConn(state, text) {
  const el = $("conn");
  el.className = `state ${state}`;
  el.textContent = text || state;
}

// -- stats --------------------------------------------------------------------------

async function refreshStats() {
  const gen = generation;
  let body;
  try {
    const r = await api(withParams("/api/v2/jobs/stats"));
    if (!r.ok) return;
    body = (await r.json()).data;
  } catch (e) {
    return;
  }
  if (gen !== generation) return;
  $("count-total").textContent = body.total.toLocaleString();
  $("matching").textContent = body.total.toLocaleString();
  for (const s of STATUSES) $(`count-${s}`).textContent = body.by_status[s].toLocaleString();
  const origins = $("origins");
  origins.replaceChildren(...ORIGINS.map((o) => {
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
}

function scheduleStats(delay) {
  if (statsTimer === null) statsTimer = setTimeout(() => { statsTimer = null; refreshStats(); }, delay);
}

// -- list, then watch ---------------------------------------------------------------

async function relist() {
  const gen = ++generation;
  if (source) { source.abort(); source = null; }
  setConn("relisting", "listing");
  $("filter-error").textContent = "";
  let r;
  try {
    r = await api(withParams("/api/v2/jobs", { limit: String(MAX_ROWS), order_by: "created_at" }));
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
  const page = (await r.json()).data;
  if (gen !== generation) return;
  jobs = new Map(page.map((j) => [j.id, j]));
  renderAll();
  refreshStats();
  watch(gen, position);
}

function watch(gen, position) {
  // Server-Sent Events read with fetch: the same protocol EventSource speaks (id, event,
  // data, retry, comments), with the token in a header and Last-Event-ID sent on reconnect.
  const controller = new AbortController();
  source = controller;
  let lastId = position;
  let retryMs = 2000;
  const url = withParams("/api/v2/jobs/watch");

  // Returns false when the stream must not go on.
  const dispatch = (event, data, id) => {
    if (gen !== generation) return false;
    if (event === "gone") { relist(); return false; }     // our position left the change log
    if (event === "expired") { askToken("The token expired: paste a fresh one."); return false; }
    if (!data) return true;                                // heartbeat: only the position moved
    const msg = JSON.parse(data);
    received.push(performance.now());
    $("position").textContent = id;
    if (msg.type === "removed") remove(msg.job);
    else upsert(msg.job, msg.type === "added");
    scheduleStats(1000);
    return true;
  };

  const connect = async () => {
    let r;
    try {
      r = await fetch(url, {
        headers: authHeaders({ Accept: "text/event-stream", ...(lastId ? { "Last-Event-ID": lastId } : {}) }),
        signal: controller.signal,
      });
    } catch (e) {
      return controller.signal.aborted ? null : "retry";
    }
    if (r.status === 410) return "relist";
    if (r.status === 401 || r.status === 403) { askToken("The watch needs a valid token."); return null; }
    if (!r.ok) return "retry";
    if (gen === generation) setConn("live");
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", data = [], event = "", id = null;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, "");
          buf = buf.slice(nl + 1);
          if (line === "") {
            if (id !== null) lastId = id;
            const ended = dispatch(event || "message", data.join("\n"), lastId);
            data = []; event = ""; id = null;
            if (ended === false) return null;
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") data.push(val);
          else if (field === "event") event = val;
          else if (field === "id") id = val;
          else if (field === "retry" && /^\d+$/.test(val)) retryMs = Number(val);
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return null;
    }
    return "retry";
  };

  (async () => {
    while (gen === generation && !controller.signal.aborted) {
      const next = await connect();
      if (next === null || gen !== generation || controller.signal.aborted) return;
      if (next === "relist") { relist(); return; }
      setConn("connecting", "reconnecting");
      await new Promise((ok) => setTimeout(ok, retryMs));
    }
  })();
}

// -- wiring -------------------------------------------------------------------------

let debounce = null;
function filtersChanged() {
  clearTimeout(debounce);
  debounce = setTimeout(() => {
    const q = filterParams().toString();
    history.replaceState(null, "", q ? `?${q}` : location.pathname);
    relist();
  }, 300);
}
form.addEventListener("input", filtersChanged);
form.addEventListener("change", filtersChanged);
form.addEventListener("reset", () => setTimeout(filtersChanged, 0));
form.addEventListener("submit", (e) => { e.preventDefault(); filtersChanged(); });

rowsEl.addEventListener("click", (e) => {
  const tr = e.target.closest("tr");
  if (tr && jobs.has(tr.dataset.id)) {
    showDetail(jobs.get(tr.dataset.id));
    loadDetail(tr.dataset.id);
  }
});
$("detail-close").addEventListener("click", () => {
  selected = null;
  $("detail").hidden = true;
  for (const tr of rowsEl.querySelectorAll("tr.selected")) tr.classList.remove("selected");
});

setInterval(() => {
  const now = performance.now();
  while (received.length && now - received[0] > 10000) received.shift();
  $("rate").textContent = `${(received.length / 10).toFixed(1)} changes/s`;
}, 1000);
setInterval(refreshStats, 5000);  // pipeline health moves without job changes too

loadFiltersFromUrl();
relist();
