// rankswarm dashboard: small inline-SVG charts (line, share area, histogram, sparkline).
// No dependencies. Every chart redraws from scratch into its container: the data are at most a
// few thousand points, and a full redraw keeps the code free of update bookkeeping.

const SVG = "http://www.w3.org/2000/svg";
const MARGIN = { top: 12, right: 14, bottom: 34, left: 54 };

export function svgEl(tag, attrs = {}, parent = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  if (parent) parent.appendChild(el);
  return el;
}

function htmlEl(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

// "Nice" axis ticks covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten.
export function niceTicks(lo, hi, count = 5) {
  if (!isFinite(lo) || !isFinite(hi)) return [];
  if (hi - lo <= Math.max(Math.abs(lo), Math.abs(hi)) * 1e-9) {  // flat (up to rounding): pad around it
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
  const ticks = [];
  const first = Math.ceil(lo / step - 1e-9);
  for (let k = first; k * step <= hi + step * 1e-9 && ticks.length < 50; k++) {
    const v = k * step;  // multiples, not repeated addition: no drift, no stall
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return ticks;
}

export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined || !isFinite(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 1e9) return (value / 1e9).toFixed(abs >= 1e10 ? 0 : 1) + "G";
  if (abs >= 1e6) return (value / 1e6).toFixed(abs >= 1e7 ? 0 : 1) + "M";
  if (abs >= 1e4) return (value / 1e3).toFixed(abs >= 1e5 ? 0 : 1) + "k";
  if (abs === 0) return "0";
  if (abs >= 100) return value.toFixed(0);
  return Number(value.toPrecision(digits)).toString();
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v === null || v === undefined || !isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

function frame(container, height) {
  container.replaceChildren();
  const width = Math.max(240, container.clientWidth || 360);
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart-svg",
                             role: "img" }, container);
  return { svg, width, height, innerW: width - MARGIN.left - MARGIN.right,
           innerH: height - MARGIN.top - MARGIN.bottom };
}

function empty(container, height, message) {
  container.replaceChildren();
  const box = htmlEl("div", "chart-empty", message || "no data yet");
  box.style.height = `${height}px`;
  container.appendChild(box);
}

function axes(f, x, y, xTicks, yTicks, opts) {
  const g = svgEl("g", { class: "axes" }, f.svg);
  for (const t of yTicks) {
    const py = y(t);
    svgEl("line", { x1: MARGIN.left, x2: f.width - MARGIN.right, y1: py, y2: py, class: "grid" }, g);
    svgEl("text", { x: MARGIN.left - 7, y: py + 3.5, class: "tick", "text-anchor": "end" }, g).textContent =
      (opts.yFormat || formatNumber)(t);
  }
  const base = f.height - MARGIN.bottom;
  svgEl("line", { x1: MARGIN.left, x2: f.width - MARGIN.right, y1: base, y2: base, class: "axis" }, g);
  for (const t of xTicks) {
    const px = x(t);
    svgEl("line", { x1: px, x2: px, y1: base, y2: base + 4, class: "axis" }, g);
    svgEl("text", { x: px, y: base + 15, class: "tick", "text-anchor": "middle" }, g).textContent =
      (opts.xFormat || formatNumber)(t);
  }
  if (opts.xLabel) {
    svgEl("text", { x: MARGIN.left + f.innerW / 2, y: f.height - 3, class: "axis-label",
                    "text-anchor": "middle" }, g).textContent = opts.xLabel;
  }
  if (opts.yLabel) {
    const ty = MARGIN.top + f.innerH / 2;
    svgEl("text", { x: 12, y: ty, class: "axis-label", "text-anchor": "middle",
                    transform: `rotate(-90 12 ${ty})` }, g).textContent = opts.yLabel;
  }
}

const known = (v) => v !== null && v !== undefined && isFinite(v);

// Runs of consecutive known values, as lists of indices: a value that was not measured is a gap,
// never bridged and never drawn as 0.
function segments(values) {
  const runs = [];
  let run = [];
  values.forEach((v, i) => {
    if (known(v)) {
      run.push(i);
    } else if (run.length) {
      runs.push(run);
      run = [];
    }
  });
  if (run.length) runs.push(run);
  return runs;
}

function pathFor(xs, values, x, y) {
  return segments(values).map((run) => run.map(
    (i, k) => `${k ? "L" : "M"}${x(xs[i]).toFixed(1)},${y(values[i]).toFixed(1)}`).join("")).join("");
}

// One closed area per run, between the values and the line y = base (pixels).
function areaFor(xs, values, x, y, base) {
  return segments(values).map((run) => {
    const top = run.map((i, k) => `${k ? "L" : "M"}${x(xs[i]).toFixed(1)},${y(values[i]).toFixed(1)}`).join("");
    return `${top}L${x(xs[run[run.length - 1]]).toFixed(1)},${base}L${x(xs[run[0]]).toFixed(1)},${base}Z`;
  }).join("");
}

function lonePoints(xs, values) {
  // points with no defined neighbour would be invisible as a path: drawn as dots instead
  return segments(values).filter((run) => run.length === 1).map((run) => run[0]);
}

function tooltip(container) {
  const tip = htmlEl("div", "chart-tip");
  tip.hidden = true;
  container.appendChild(tip);
  return tip;
}

function placeTip(tip, container, px, py) {
  const box = container.getBoundingClientRect();
  const left = px + 14 + tip.offsetWidth > box.width ? px - 14 - tip.offsetWidth : px + 14;
  tip.style.left = `${Math.max(0, left)}px`;
  tip.style.top = `${Math.max(0, Math.min(py - 10, box.height - tip.offsetHeight))}px`;
}

function nearestIndex(xs, value) {
  let lo = 0;
  let hi = xs.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < value) lo = mid;
    else hi = mid;
  }
  return Math.abs(xs[lo] - value) <= Math.abs(xs[hi] - value) ? lo : hi;
}

// A line chart over a shared x axis (rounds). spec: {x: [...], series: [{name, color, values, width,
// dash, area}], height, xLabel, yLabel, yFormat, xFormat, yMin, yMax, title(i) for the tooltip header,
// markers: [{value, color, label}] horizontal reference lines}.
export function lineChart(container, spec) {
  const height = spec.height || 190;
  const xs = spec.x || [];
  const series = (spec.series || []).filter((s) => s.values && s.values.some(known));
  if (!xs.length) return empty(container, height);  // no rounds yet
  if (!series.length) return empty(container, height, spec.emptyText);  // rounds, but nothing measured
  const f = frame(container, height);
  let [lo, hi] = extent(series.flatMap((s) => s.values).concat((spec.markers || []).map((m) => m.value)));
  if (spec.yMin !== undefined) lo = Math.min(lo, spec.yMin);
  if (spec.yMax !== undefined) hi = Math.max(hi, spec.yMax);
  const yTicks = niceTicks(lo, hi, Math.max(2, Math.round(f.innerH / 38)));
  const y0 = Math.min(lo, yTicks[0]);
  const y1 = Math.max(hi, yTicks[yTicks.length - 1]);
  const x0 = xs[0];
  const x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const x = (v) => MARGIN.left + ((v - x0) / (x1 - x0)) * f.innerW;
  const y = (v) => MARGIN.top + (1 - (v - y0) / (y1 - y0 || 1)) * f.innerH;
  const xTicks = niceTicks(x0, x1, Math.max(3, Math.round(f.innerW / 55))).filter(
    (t) => t >= x0 && t <= x1 && Number.isInteger(t));
  axes(f, x, y, xTicks, yTicks, spec);
  for (const m of spec.markers || []) {
    if (m.value === null || m.value === undefined || !isFinite(m.value)) continue;
    svgEl("line", { x1: MARGIN.left, x2: f.width - MARGIN.right, y1: y(m.value), y2: y(m.value),
                    stroke: m.color, class: "marker" }, f.svg);
  }
  const plot = svgEl("g", { class: "plot" }, f.svg);
  for (const s of series) {
    if (s.area) {
      const floor = y(Math.max(y0, Math.min(0, y1))).toFixed(1);
      svgEl("path", { d: areaFor(xs, s.values, x, y, floor), fill: s.color, class: "area" }, plot);
    }
    svgEl("path", { d: pathFor(xs, s.values, x, y), stroke: s.color, "stroke-width": s.width || 1.6,
                    "stroke-dasharray": s.dash, class: "line", "data-series": s.name }, plot);
    for (const i of lonePoints(xs, s.values)) {
      svgEl("circle", { cx: x(xs[i]), cy: y(s.values[i]), r: 2.5, fill: s.color }, plot);
    }
  }
  interactive(container, f, xs, series, x, (k, v) => y(v), spec);
}

// Hover: a cursor line, one dot per series at yAt(seriesIndex, value), and a tooltip listing the values.
function interactive(container, f, xs, series, x, yAt, spec) {
  const tip = tooltip(container);
  const cursor = svgEl("line", { y1: MARGIN.top, y2: f.height - MARGIN.bottom, class: "cursor" }, f.svg);
  cursor.setAttribute("visibility", "hidden");
  const dots = series.map((s) => svgEl("circle", { r: 3.5, fill: s.color, class: "cursor-dot",
                                                  visibility: "hidden" }, f.svg));
  const overlay = svgEl("rect", { x: MARGIN.left, y: MARGIN.top, width: f.innerW, height: f.innerH,
                                  class: "overlay" }, f.svg);
  const fmt = spec.valueFormat || spec.yFormat || formatNumber;
  overlay.addEventListener("pointermove", (event) => {
    const box = f.svg.getBoundingClientRect();
    const px = event.clientX - box.left;
    const value = xs[0] + ((px - MARGIN.left) / f.innerW) * ((xs[xs.length - 1] - xs[0]) || 1);
    const i = nearestIndex(xs, value);
    cursor.setAttribute("x1", x(xs[i]));
    cursor.setAttribute("x2", x(xs[i]));
    cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(htmlEl("div", "tip-title", spec.title ? spec.title(i) : `round ${xs[i]}`));
    series.forEach((s, k) => {
      const v = s.values[i];
      const ok = v !== null && v !== undefined && isFinite(v);
      dots[k].setAttribute("visibility", ok ? "visible" : "hidden");
      if (ok) {
        dots[k].setAttribute("cx", x(xs[i]));
        dots[k].setAttribute("cy", yAt(k, v));
      }
      const row = htmlEl("div", "tip-row");
      const swatch = htmlEl("span", "swatch");
      swatch.style.background = s.color;
      row.append(swatch, htmlEl("span", "tip-name", s.name), htmlEl("span", "tip-value", ok ? fmt(v) : "–"));
      tip.appendChild(row);
    });
    tip.hidden = false;
    placeTip(tip, container, px, event.clientY - box.top);
  });
  overlay.addEventListener("pointerleave", () => {
    tip.hidden = true;
    cursor.setAttribute("visibility", "hidden");
    dots.forEach((d) => d.setAttribute("visibility", "hidden"));
  });
}

// Explore vs exploit share over rounds: two stacked areas filling [0, 1].
export function shareChart(container, spec) {
  const height = spec.height || 190;
  const xs = spec.x || [];
  const explore = spec.explore || [];
  if (!xs.length) return empty(container, height);
  if (!explore.some(known)) return empty(container, height, spec.emptyText);
  const f = frame(container, height);
  const x0 = xs[0];
  const x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const x = (v) => MARGIN.left + ((v - x0) / (x1 - x0)) * f.innerW;
  const y = (v) => MARGIN.top + (1 - v) * f.innerH;
  const xTicks = niceTicks(x0, x1, Math.max(3, Math.round(f.innerW / 55))).filter(
    (t) => t >= x0 && t <= x1 && Number.isInteger(t));
  axes(f, x, y, xTicks, [0, 0.25, 0.5, 0.75, 1], { ...spec, yFormat: (v) => `${Math.round(v * 100)}%` });
  const plot = svgEl("g", { class: "plot" }, f.svg);
  // rounds with no gated response are gaps in both areas
  svgEl("path", { d: areaFor(xs, explore, x, y, y(0)), fill: spec.exploreColor, class: "share explore" }, plot);
  svgEl("path", { d: areaFor(xs, explore, x, y, y(1)), fill: spec.exploitColor, class: "share exploit" }, plot);
  svgEl("path", { d: pathFor(xs, explore, x, y), stroke: spec.exploreColor, "stroke-width": 1.6, class: "line",
                  "data-series": "explore" }, plot);
  svgEl("line", { x1: MARGIN.left, x2: f.width - MARGIN.right, y1: y(0.5), y2: y(0.5), class: "marker half" },
        f.svg);
  const series = [{ name: "explore (ER)", color: spec.exploreColor, values: explore },
                  { name: "exploit (ERV)", color: spec.exploitColor,
                    values: explore.map((v) => (v === null || !isFinite(v) ? null : 1 - v)) }];
  interactive(container, f, xs, series, x, (k, v) => y(k === 0 ? v : 1 - v), {
    ...spec, valueFormat: (v) => `${(v * 100).toFixed(1)}%` });
}

// Histogram from bin edges and counts, with optional vertical markers [{value, color, label}].
export function histogram(container, spec) {
  const height = spec.height || 170;
  const edges = spec.edges || [];
  const counts = spec.counts || [];
  if (counts.length === 0) return empty(container, height, spec.emptyText);
  const f = frame(container, height);
  const markers = (spec.markers || []).filter((m) => m.value !== null && m.value !== undefined && isFinite(m.value));
  const x0 = Math.min(edges[0], ...markers.map((m) => m.value));
  const x1 = Math.max(edges[edges.length - 1], ...markers.map((m) => m.value));
  const span = x1 - x0 || 1;
  const x = (v) => MARGIN.left + ((v - x0) / span) * f.innerW;
  const top = Math.max(...counts);
  const yTicks = niceTicks(0, top, Math.max(2, Math.round(f.innerH / 38)));
  const y1 = Math.max(top, yTicks[yTicks.length - 1]) || 1;
  const y = (v) => MARGIN.top + (1 - v / y1) * f.innerH;
  axes(f, x, y, niceTicks(x0, x1, Math.max(2, Math.round(f.innerW / 70))).filter((t) => t >= x0 && t <= x1),
       yTicks, spec);
  const tip = tooltip(container);
  const plot = svgEl("g", { class: "plot" }, f.svg);
  counts.forEach((count, i) => {
    const left = x(edges[i]);
    const w = Math.max(1, x(edges[i + 1]) - left - 1);
    const bar = svgEl("rect", { x: left + 0.5, y: y(count), width: w, height: Math.max(0, y(0) - y(count)),
                                fill: spec.color, class: "bar" }, plot);
    bar.addEventListener("pointermove", (event) => {
      const box = f.svg.getBoundingClientRect();
      tip.replaceChildren(htmlEl("div", "tip-title", `${formatNumber(edges[i])} to ${formatNumber(edges[i + 1])}`),
                          htmlEl("div", "tip-row", `≈ ${count.toFixed(count < 10 ? 1 : 0)} responses`));
      tip.hidden = false;
      placeTip(tip, container, event.clientX - box.left, event.clientY - box.top);
    });
    bar.addEventListener("pointerleave", () => { tip.hidden = true; });
  });
  for (const m of markers) {
    svgEl("line", { x1: x(m.value), x2: x(m.value), y1: MARGIN.top, y2: f.height - MARGIN.bottom,
                    stroke: m.color, class: "marker vertical" }, f.svg);
  }
}

// A tiny trend line for the summary cards.
export function sparkline(container, values, color) {
  container.replaceChildren();
  if (values.filter(known).length < 2) return;
  const width = container.clientWidth || 120;
  const height = container.clientHeight || 28;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "spark" }, container);
  const [lo, hi] = extent(values);
  const last = values.length - 1 || 1;
  const x = (i) => 1 + (i / last) * (width - 2);
  const y = (v) => 2 + (1 - (v - lo) / (hi - lo || 1)) * (height - 4);
  svgEl("path", { d: pathFor(values.map((_, i) => i), values, x, y), stroke: color, "stroke-width": 1.5,
                  fill: "none" }, svg);
}
