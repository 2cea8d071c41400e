// The detail panel's content: every field of one job, links and error lists readable, ids copyable.
"use strict";

import { $, when, copyButton, timeZone } from "./util.js";

const COPYABLE = new Set(["id", "batch_id", "project_id", "parent_id"]);
const TIMES = new Set(["created_at", "updated_at", "start_timestamp", "end_timestamp"]);

function detailValue(k, v) {
  const dd = document.createElement("dd");
  if (k === "results_link" && typeof v === "string" && /^https?:\/\//i.test(v)) {
    const a = document.createElement("a"); // the registry only accepts absolute http(s) links
    a.href = v;
    a.textContent = v;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    dd.appendChild(a);
  } else if (k === "errors" && Array.isArray(v) && v.length) {
    const ul = document.createElement("ul");
    ul.className = "errors";
    ul.append(...v.map((e) => { const li = document.createElement("li"); li.textContent = e; return li; }));
    dd.appendChild(ul);
  } else if (v !== null && typeof v === "object") {
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(v, null, 2);
    dd.appendChild(pre);
  } else {
    dd.textContent = v === null || v === undefined ? "—" : String(v);
    if (TIMES.has(k) && v) dd.title = `${v}${timeZone() === "local" ? ` · ${when(v)} local` : ""}`;
  }
  return dd;
}

export function renderDetail(job) {
  const dl = $("detail-fields");
  dl.replaceChildren();
  for (const [k, v] of Object.entries(job)) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    if (COPYABLE.has(k) && v) dt.append(" ", copyButton(v));
    const dd = detailValue(k, v);
    dd.dataset.field = k;
    dl.append(dt, dd);
  }
  $("detail").hidden = false;
}
