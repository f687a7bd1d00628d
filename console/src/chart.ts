// A resource's history as a step chart: a resource holds its value until the next
// change, so the line is flat between changes and jumps at each.  Numbers get a scale;
// anything else (up/down, a state name) gets one level per distinct value.

import { svg } from "./dom.js";
import { clock, when } from "./format.js";
import type { HistoryPoint } from "./types.js";

const W = 640;
const H = 200;
const PAD = { left: 90, right: 16, top: 12, bottom: 28 };

interface Scale {
  y: (v: string) => number;
  ticks: { label: string; y: number }[];
}

function numericScale(values: number[]): Scale {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const span = H - PAD.top - PAD.bottom;
  const y = (v: string): number => PAD.top + span * (1 - (Number(v) - lo) / (hi - lo));
  const fmt = (v: number): string => (Number.isInteger(v) ? String(v) : v.toFixed(1));
  return { y, ticks: [lo, (lo + hi) / 2, hi].map((v) => ({ label: fmt(v), y: y(String(v)) })) };
}

// Bottom to top, for the values whose order means something: a module's states from
// stopped to serving, a link or daemon from down to up.
const ORDERS = [
  ["STOP", "WAIT", "SECOND", "ALONE", "UP", "PRIM"],
  ["NotReady", "Transient", "Ready"],
  ["down", "stopped", "up"],
  ["off", "on"],
];

function levelScale(values: string[]): Scale {
  const distinct = [...new Set(values)];
  const order = ORDERS.find((o) => distinct.every((v) => o.includes(v)));
  const levels = order !== undefined ? order.filter((v) => distinct.includes(v)) : distinct.sort();
  const span = H - PAD.top - PAD.bottom;
  const step = levels.length > 1 ? span / (levels.length - 1) : 0;
  const at = (v: string): number =>
    levels.length > 1 ? PAD.top + span - step * levels.indexOf(v) : PAD.top + span / 2;
  return { y: at, ticks: levels.map((l) => ({ label: l.length > 12 ? l.slice(0, 11) + "…" : l, y: at(l) })) };
}

const isNumber = (v: string): boolean => v.trim() !== "" && Number.isFinite(Number(v));

export function historyChart(name: string, points: HistoryPoint[], now: number = Date.now() / 1000): SVGSVGElement {
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": `history of ${name}`,
    "data-points": points.length,
  });
  const sorted = [...points].sort((a, b) => a.at - b.at);
  const first = sorted[0];
  if (first === undefined) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, "no change recorded"));
    return root;
  }
  const t0 = first.at;
  const t1 = Math.max(now, sorted[sorted.length - 1]?.at ?? t0, t0 + 1);
  const x = (t: number): number => PAD.left + ((W - PAD.left - PAD.right) * (t - t0)) / Math.max(t1 - t0, 1);
  const scale = sorted.every((p) => isNumber(p.value))
    ? numericScale(sorted.map((p) => Number(p.value)))
    : levelScale(sorted.map((p) => p.value));

  for (const tick of scale.ticks) {
    root.append(
      svg("line", { x1: PAD.left, x2: W - PAD.right, y1: tick.y, y2: tick.y, class: "chart-grid" }),
      svg("text", { x: PAD.left - 6, y: tick.y + 4, "text-anchor": "end", class: "chart-label" }, tick.label),
    );
  }
  const baseline = H - PAD.bottom;
  root.append(
    svg("line", { x1: PAD.left, x2: W - PAD.right, y1: baseline, y2: baseline, class: "chart-axis" }),
    svg("text", { x: PAD.left, y: H - 8, class: "chart-label" }, when(t0)),
    svg("text", { x: W - PAD.right, y: H - 8, "text-anchor": "end", class: "chart-label" }, clock(t1)),
  );

  let d = "";
  sorted.forEach((p, i) => {
    const px = x(p.at);
    const py = scale.y(p.value);
    d += i === 0 ? `M${px.toFixed(1)},${py.toFixed(1)}` : `H${px.toFixed(1)}V${py.toFixed(1)}`;
  });
  d += `H${x(t1).toFixed(1)}`;
  root.append(svg("path", { d, class: "chart-line" }));
  for (const p of sorted) {
    const dot = svg("circle", { cx: x(p.at), cy: scale.y(p.value), r: 3, class: "chart-dot" });
    dot.append(svg("title", {}, `${when(p.at)}: ${p.value}`));
    root.append(dot);
  }
  return root;
}
