// Time-series charts drawn as SVG polylines by this page's own code, from samples kept in ring buffers.
"use strict";

const CAPACITY = 180;  // samples kept per series (6 minutes at one sample every 2 s)
const W = 300, H = 70; // the SVG's viewBox; it stretches to the figure, lines keep their width (CSS)

// A fixed-size ring of [time ms, value] samples.
export class Ring {
  constructor(capacity = CAPACITY) {
    this.capacity = capacity;
    this.items = [];
  }
  push(t, v) {
    this.items.push([t, v]);
    if (this.items.length > this.capacity) this.items.shift();
  }
  get length() { return this.items.length; }
  last() { return this.items.length ? this.items[this.items.length - 1][1] : null; }
}

const fmt = (v, unit) => {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const n = Number.isInteger(v) || Math.abs(v) >= 100 ? Math.round(v).toLocaleString()
    : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  return unit ? `${n} ${unit}` : n;
};

// One chart: named series (each a Ring and a CSS class for its colour), one shared y scale from 0.
export class Chart {
  constructor(figure, series, unit = "") {
    this.figure = figure;
    this.svg = figure.querySelector("svg");
    this.ns = this.svg.namespaceURI;  // SVG's namespace, taken from the page's own <svg>
    this.series = series;             // [{name, cls, ring}]
    this.unit = unit;
    this.lines = new Map();
  }

  draw() {
    const points = this.series.flatMap((s) => s.ring.items);
    const t0 = Math.min(...points.map((p) => p[0]));
    const t1 = Math.max(...points.map((p) => p[0]));
    const vmax = Math.max(1e-9, ...points.map((p) => p[1]).filter((v) => v !== null && !Number.isNaN(v)));
    const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * W : W);
    const y = (v) => H - 2 - (v / vmax) * (H - 4);
    for (const s of this.series) {
      let line = this.lines.get(s.name);
      if (!line) {
        line = document.createElementNS(this.ns, "polyline");
        line.setAttribute("class", `line ${s.cls}`);
        line.dataset.series = s.name;
        this.svg.appendChild(line);
        this.lines.set(s.name, line);
      }
      const pts = s.ring.items.filter((p) => p[1] !== null && !Number.isNaN(p[1]));
      line.setAttribute("points", pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
    }
    this.figure.dataset.samples = String(Math.max(0, ...this.series.map((s) => s.ring.length)));
    this.figure.querySelector(".ymax").textContent = `max ${fmt(vmax > 1e-9 ? vmax : 0, this.unit)}`;
    const secs = points.length ? Math.round((t1 - t0) / 1000) : 0;
    this.figure.querySelector(".span").textContent = secs >= 60 ? `last ${Math.round(secs / 60)} min` : `last ${secs} s`;
    const legend = this.figure.querySelector(".legend");
    legend.replaceChildren(...this.series.map((s) => {
      const span = document.createElement("span");
      span.className = `key ${s.cls}`;
      span.textContent = `${s.name} ${fmt(s.ring.last(), this.unit)}`;
      return span;
    }));
  }
}

// Counters sampled as totals become rates: (v1 - v0) / seconds; a counter reset reads as no rate.
export class RateOf {
  constructor() { this.prev = null; }
  next(t, total) {
    const prev = this.prev;
    this.prev = [t, total];
    if (!prev || total < prev[1] || t <= prev[0]) return null;
    return (total - prev[1]) / ((t - prev[0]) / 1000);
  }
}

// The handful of /metrics series the charts use, summed over their labels.
export function parseMetrics(text) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    sums[m[1]] = (sums[m[1]] || 0) + Number(m[3]);
  }
  return sums;
}
