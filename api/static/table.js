// The jobs table: one page of the list in the API's order (or sorted within the page by any
// column), rows replaced in place as changes arrive, and which arriving jobs belong on this page.
"use strict";

import { $, when, durationMs, formatDuration } from "./util.js";

export const view = {
  orderBy: "created_at", // the API's order_by
  direction: "DESC",     // the API's order_by_direction
  offset: 0,
  limit: 100,
  total: null,           // pagination.total of the last list
  localKey: "",          // a column sorted within the page ("" = the API's order)
  localDir: "ASC",
};

export const jobs = new Map(); // id -> job, the rows on screen
let selectedId = null;
export const setSelected = (id) => { selectedId = id; };

const rowsEl = () => $("rows");
const short = (uuid) => (uuid ? uuid.slice(0, 8) : "");

// -- orders -----------------------------------------------------------------------------

// The API's order: (order_by, id) both in the direction; null sort fields last either way.
export function serverCompare(a, b) {
  const k = view.orderBy, sign = view.direction === "DESC" ? -1 : 1;
  const va = a[k], vb = b[k];
  if (va !== vb) {
    if (va === null || va === undefined) return 1;
    if (vb === null || vb === undefined) return -1;
    if (va < vb) return -sign;
    if (va > vb) return sign;
  }
  return a.id < b.id ? -sign : a.id > b.id ? sign : 0;
}

const localValue = {
  status: (j) => j.status, origin: (j) => j.origin, project_id: (j) => j.project_id, user_id: (j) => j.user_id,
  duration: (j) => durationMs(j), error: (j) => (j.errors && j.errors.length ? j.errors[0] : null),
};

// What the rows on screen are sorted by: a column within the page, else the API's order.
export function viewCompare(a, b) {
  if (view.localKey) {
    const f = localValue[view.localKey], va = f(a), vb = f(b), sign = view.localDir === "DESC" ? -1 : 1;
    if (va !== vb) {
      if (va === null) return 1;
      if (vb === null) return -1;
      return (va < vb ? -1 : 1) * sign;
    }
  }
  return serverCompare(a, b);
}

// -- rendering --------------------------------------------------------------------------

function cell(text, cls, title) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  if (title) td.title = title;
  return td;
}

export function renderRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.id = job.id;
  tr.dataset.status = job.status;
  const status = document.createElement("td");
  status.className = "status";
  const badge = document.createElement("span");
  badge.className = `badge ${job.status}`;
  badge.textContent = job.status;
  status.appendChild(badge);
  const error = job.errors && job.errors.length ? job.errors.join("; ") : "";
  const ms = durationMs(job);
  tr.append(
    cell(short(job.id), "mono id", job.id), status, cell(job.origin), cell(short(job.project_id), "mono", job.project_id),
    cell(job.user_id, "user"), cell(String(job.runs), "num"), cell(when(job.created_at)), cell(when(job.updated_at)),
    cell(formatDuration(ms) + (ms !== null && !job.end_timestamp ? " …" : ""), "num duration"),
    cell(error, "errors", error),
  );
  if (job.id === selectedId) tr.classList.add("selected");
  return tr;
}

function flash(tr) {
  tr.classList.add("flash");
  requestAnimationFrame(() => requestAnimationFrame(() => tr.classList.remove("flash")));
}

export function rowOf(id) {
  return rowsEl().querySelector(`tr[data-id="${CSS.escape(id)}"]`);
}

function caption() {
  $("shown").textContent = String(jobs.size);
  const first = jobs.size ? view.offset + 1 : 0;
  $("range").textContent = `${first.toLocaleString()}–${(view.offset + jobs.size).toLocaleString()}`;
  $("prev").disabled = view.offset === 0;
  $("next").disabled = view.total !== null && view.offset + view.limit >= view.total;
}

export function setTotal(total) {
  view.total = total;
  $("matching").textContent = total.toLocaleString();
  caption();
}

export function renderAll(page) {
  jobs.clear();
  for (const j of page) jobs.set(j.id, j);
  rowsEl().replaceChildren(...[...jobs.values()].sort(viewCompare).map(renderRow));
  caption();
}

function place(tr, job) {
  const next = [...jobs.values()].filter((j) => j.id !== job.id).sort(viewCompare).find((j) => viewCompare(job, j) < 0);
  rowsEl().insertBefore(tr, next ? rowOf(next.id) : null);
}

// Whether a job not on screen belongs on this page of the API's order.
function belongs(job) {
  const inOrder = [...jobs.values()].sort(serverCompare);
  if (!inOrder.length) return view.offset === 0;
  const first = inOrder[0], last = inOrder[inOrder.length - 1];
  if (view.offset > 0 && serverCompare(job, first) < 0) return false; // an earlier page's
  if (inOrder.length >= view.limit) return serverCompare(job, last) < 0;
  return true; // the page has room: it is the last one
}

export function upsert(job, isNew) {
  const old = rowOf(job.id);
  if (!old) {
    if (!belongs(job)) return;
    jobs.set(job.id, job);
    const tr = renderRow(job);
    place(tr, job);
    if (isNew) flash(tr);
    while (jobs.size > view.limit) {
      const last = [...jobs.values()].sort(serverCompare).pop();
      jobs.delete(last.id);
      rowOf(last.id)?.remove();
    }
  } else {
    jobs.set(job.id, job);
    const tr = renderRow(job);
    old.remove();
    place(tr, job); // in place, unless the change moved it in the order
    flash(tr);
  }
  caption();
}

export function remove(job) {
  if (jobs.delete(job.id)) rowOf(job.id)?.remove();
  caption();
}

export function markSelected(id) {
  for (const tr of rowsEl().querySelectorAll("tr.selected")) tr.classList.remove("selected");
  if (id) rowOf(id)?.classList.add("selected");
}

// Sort markers on the headers and the controls.
export function showOrder() {
  for (const th of document.querySelectorAll("#jobs th")) {
    const key = th.dataset.sort || th.dataset.local;
    const active = th.dataset.sort ? !view.localKey && key === view.orderBy : key === view.localKey;
    const dir = th.dataset.sort ? view.direction : view.localDir;
    th.classList.toggle("sorted", active);
    th.dataset.dir = active ? dir : "";
    th.setAttribute("aria-sort", active ? (dir === "ASC" ? "ascending" : "descending") : "none");
  }
  $("order-by").value = view.orderBy;
  $("direction").textContent = view.direction === "DESC" ? "↓ DESC" : "↑ ASC";
  $("limit").value = String(view.limit);
  $("local-note").hidden = !view.localKey;
  $("local-key").textContent = view.localKey ? `${view.localKey} ${view.localDir}` : "";
}

export function resort() {
  const sorted = [...jobs.values()].sort(viewCompare);
  rowsEl().replaceChildren(...sorted.map(renderRow));
  caption();
}
