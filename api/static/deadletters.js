// The dead-letter view: entries with their reasons, paged, and replay (one or all) for operators.
"use strict";

import { $ } from "./util.js";

const PAGE = 50;
let next = null;     // cursor of the next page, null on the last one
let api = null;      // the page's authenticated fetch
let onReplayed = () => {};

export function initDeadLetters(apiFetch, replayed) {
  api = apiFetch;
  onReplayed = replayed;
  $("dead-toggle").addEventListener("click", () => toggle(!isOpen()));
  $("dl-close").addEventListener("click", () => toggle(false));
  $("dl-more").addEventListener("click", () => load(next));
  $("dl-replay-all").addEventListener("click", () => {
    // Every entry goes back to the events stream at once: worth a second thought.
    if (confirm("Replay every dead letter to the events stream?")) replay({ all: true });
  });
  $("dl-rows").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-replay]");
    if (b) replay({ ids: [b.dataset.replay] });
  });
}

export const isOpen = () => !$("deadletters").hidden;

export function toggle(open) {
  $("deadletters").hidden = !open;
  const p = new URLSearchParams(location.search);
  if (open) p.set("view", "dead"); else p.delete("view");
  history.replaceState(null, "", p.toString() ? `?${p}` : location.pathname);
  if (open) load(null);
}

function row(d) {
  const tr = document.createElement("tr");
  tr.dataset.id = d.id;
  const td = (text, cls) => {
    const c = document.createElement("td");
    c.textContent = text;
    if (cls) c.className = cls;
    return c;
  };
  const fields = document.createElement("td");
  const pre = document.createElement("pre");
  pre.textContent = Object.entries(d.fields).map(([k, v]) => `${k}=${v}`).join("\n") + (d.truncated ? "\n…" : "");
  fields.appendChild(pre);
  const action = document.createElement("td");
  const b = document.createElement("button");
  b.type = "button";
  b.className = "admin-only";
  b.dataset.replay = d.id;
  b.textContent = "replay";
  b.title = "re-publish this entry to the events stream";
  action.appendChild(b);
  tr.append(td(d.id, "mono"), td(d.source_id, "mono"), td(d.error, "reason"), fields, action);
  return tr;
}

async function load(after) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (after) q.set("after", after);
  const r = await api(`/api/v2/dead-letters?${q}`, {}, true);
  const message = $("dl-message");
  if (r.status === 403) {
    message.textContent = "dead letters are for operators: use an admin token";
    $("dl-rows").replaceChildren();
    $("deadletters").classList.remove("admin");
    return;
  }
  if (!r.ok) { message.textContent = `could not list dead letters (${r.status})`; return; }
  const body = await r.json();
  $("deadletters").classList.add("admin");
  message.textContent = body.pagination.total ? "" : "none: every entry was applied";
  $("dl-total").textContent = `(${body.pagination.total.toLocaleString()})`;
  const rows = body.data.map(row);
  if (after) $("dl-rows").append(...rows); else $("dl-rows").replaceChildren(...rows);
  next = body.pagination.next;
  $("dl-more").hidden = next === null;
}

async function replay(body) {
  const r = await api("/api/v2/dead-letters/replay", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }, true);
  const text = r.ok
    ? `${(await r.json()).data.replayed} replayed (an entry still invalid comes back with a new id)`
    : `replay failed (${r.status})`;
  await load(null);
  $("dl-message").textContent = text;
  onReplayed();
}
