// Small shared helpers of the dashboard: DOM lookup, times in UTC or local, durations, copying.
"use strict";

export const $ = (id) => document.getElementById(id);

export const STATUSES = ["PENDING", "RUNNING", "CANCELING", "DONE", "ERROR", "CANCELED"];
export const ORIGINS = ["CLIENT", "AZURE", "OVH", "UNKNOWN"];

// -- time zone: UTC (the API's) or this browser's ---------------------------------------

let zone = localStorage.getItem("jobreg-tz") === "local" ? "local" : "utc";
export const timeZone = () => zone;
export function setTimeZone(z) {
  zone = z === "local" ? "local" : "utc";
  localStorage.setItem("jobreg-tz", zone);
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

// "2026-11-23 10:00:05" in the chosen zone (the API sends UTC with microseconds).
export function when(ts) {
  if (!ts) return "";
  if (zone === "utc") return ts.slice(0, 19).replace("T", " ");
  const d = new Date(ts);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function clock(date) {
  return zone === "utc"
    ? `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} UTC`
    : `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

// A datetime-local input's value (read in the chosen zone) as the API's ISO date-time, and back.
export function inputToIso(value) {
  if (!value) return "";
  const d = new Date(zone === "utc" ? `${value}Z` : value);
  return Number.isNaN(d.getTime()) ? value : d.toISOString();
}

export function isoToInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  if (zone === "utc") return d.toISOString().slice(0, 19);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// -- durations --------------------------------------------------------------------------

export function durationMs(job, now = Date.now()) {
  if (!job.start_timestamp) return null;
  const end = job.end_timestamp ? Date.parse(job.end_timestamp) : now;
  return Math.max(0, end - Date.parse(job.start_timestamp));
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

// "as of 10:00:05 (3 s ago)" from a change-log position ("<ms>-<seq>", Redis's clock).
export function asOf(position, now = Date.now()) {
  // A partitioned registry's position is a vector of its partitions' `<ms>-<seq>` joined by "_": the
  // latest of them is the time the view is as of (an empty partition's "0-0" is not).
  const ms = Math.max(0, ...String(position || "").split("_").map((p) => Number(p.split("-")[0]) || 0));
  if (!ms) return "as of –";
  const ago = Math.max(0, Math.round((now - ms) / 1000));
  const rel = ago < 60 ? `${ago} s ago` : ago < 3600 ? `${Math.floor(ago / 60)} min ago` : `${Math.floor(ago / 3600)} h ago`;
  return `as of ${clock(new Date(ms))} (${rel})`;
}

// -- copying ----------------------------------------------------------------------------

export async function writeClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    // No clipboard API (a plain-http origin other than localhost) or no permission: the old way.
    const area = document.createElement("textarea");
    area.value = text;
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

export function copyButton(text, label = "copy") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "copy";
  b.textContent = label;
  b.title = `copy ${text}`;
  b.dataset.copy = text;
  b.addEventListener("click", async (e) => {
    e.stopPropagation();
    const ok = await writeClipboard(text);
    b.textContent = ok ? "copied" : "copy failed";
    if (ok) b.dataset.copied = "true";
    setTimeout(() => { b.textContent = label; }, 1500);
  });
  return b;
}
