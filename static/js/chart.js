// The comparison chart: copy time per scenario row, server A beside server B, drawn as SVG
// from measured runs, with the 2019 reference times as markers. Self-contained SVG (colours
// and fonts inline) so the exported file looks the same on a slide.

import { config } from "./api.js";
import * as f from "./format.js";
import { FINAL, liveElapsed, store } from "./live.js";

const SVGNS = "http://www.w3.org/2000/svg";
const FONT = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Roboto, sans-serif";

// --- which run belongs to which row -------------------------------------------------
// The service says: every run carries `scenario_rows` ({row key: at the row's own geometry}), filled
// by one rule (lab.domain.scenarios.rows_of) when the run is made, whoever started it (a sweep, a
// talk act, the lab form, a script). No field is compared here.

// The row's server as the service normalised it (bytes, milliseconds).
export function rowSpec(row) {
  return row.spec || { ...config.spec_defaults, ...(row.server || {}) };
}

// Runs by the rows they measure: row key -> [run], newest first.
export function runsByKey() {
  const byRow = new Map();
  for (const run of store.runs.values()) {
    for (const key of Object.keys(run.scenario_rows || {})) {
      if (!byRow.has(key)) byRow.set(key, []);
      byRow.get(key).push(run);
    }
  }
  for (const list of byRow.values()) list.sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  return byRow;
}

export function runsForRow(row, byRow) {
  return byRow.get(row.key) || [];
}

// A row's 2019 figures hold for the row's own server only (the service says so per run): a run of
// the row at another size, delay or storage shows no reference marker.
export function referenceHolds(row, run) {
  return Boolean(run && run.scenario_rows && run.scenario_rows[row.key] === true);
}

// The run to show for a row: the newest one still going, else the newest result.
// `since` (epoch s) hides older runs, for a talk act that was reset.
export function pickRun(list, since = 0) {
  const fresh = (list || []).filter((r) => (r.created_at || 0) >= since && r.status !== "cancelled");
  const current = fresh[0] || null;
  const previous = fresh.find((r) => r.status === "succeeded" || r.status === "failed") || null;
  return { current, previous };
}

export function barFor(row, byKey, since = 0) {
  const { current, previous } = pickRun(runsForRow(row, byKey), since);
  const bar = { row, group: row.group || f.group(rowSpec(row)), ref: row.reference ? row.reference.time_s : null,
    run: current, state: "empty", value: null };
  if (!current) return bar;
  if (!referenceHolds(row, current)) bar.ref = null;
  if (current.status === "running") {
    bar.state = "running";
    bar.value = liveElapsed(current.id) ?? 0;
  } else if (current.status === "queued") {
    bar.state = "queued";
    if (previous) { bar.value = previous.duration_s; bar.run = previous; bar.stale = true; }
  } else if (current.status === "succeeded" && current.verified !== false) {
    bar.state = "done";
    bar.value = current.duration_s;
  } else {
    bar.state = "failed";
    bar.value = current.duration_s;
  }
  return bar;
}

function stripGroup(label) {
  return String(label || "").replace(/^[AB],\s*/, "").replace(/\s+on server [AB]$/, "");
}

// Rows become categories: a row for server A and its twin for server B share one.
export function buildModel(rows, { since = 0, labelFor = null } = {}) {
  const byKey = runsByKey();
  const cats = [];
  const index = new Map();
  for (const row of rows) {
    let key = row.key;
    if (row.group === "A" || row.group === "B") {
      const { zeromode: _z, ...rest } = rowSpec(row);
      key = `${row.client}|${JSON.stringify(rest)}`;
    }
    let cat = index.get(key);
    if (!cat) {
      const label = stripGroup(row.label) || row.client;
      const sub = label.includes(row.client) ? `fastzeromode=${rowSpec(row).fastzeromode}` : row.client;
      cat = { key, label, sub, bars: [] };
      if (labelFor) Object.assign(cat, labelFor(row) || {});
      index.set(key, cat);
      cats.push(cat);
    }
    cat.bars.push(barFor(row, byKey, since));
  }
  for (const cat of cats) cat.bars.sort((a, b) => (a.group === "B") - (b.group === "B"));
  const values = cats.flatMap((c) => c.bars.flatMap((b) => [b.value || 0, b.ref || 0]));
  return { cats, max: Math.max(1, ...values) };
}

// --- drawing --------------------------------------------------------------------------
export function palette() {
  const cs = getComputedStyle(document.documentElement);
  const v = (name) => cs.getPropertyValue(name).trim();
  return { bg: v("--surface"), text: v("--text"), muted: v("--muted"), grid: v("--border"), track: v("--track"),
    A: v("--a"), B: v("--b"), N: v("--n"), bad: v("--bad"), ref: v("--ref"), ok: v("--ok") };
}

let measureCtx = null;
// Width of `text` in pixels as the SVG will draw it (same font stack), for fitting labels.
export function textWidth(text, size, weight = 400) {
  if (!measureCtx) measureCtx = document.createElement("canvas").getContext("2d");
  measureCtx.font = `${weight} ${size}px ${FONT}`;
  return measureCtx.measureText(String(text)).width;
}

function fit(text, maxWidth, size, weight = 400) {
  let t = String(text || "");
  if (textWidth(t, size, weight) <= maxWidth) return t;
  while (t.length > 1 && textWidth(`${t}…`, size, weight) > maxWidth) t = t.slice(0, -1);
  return `${t}…`;
}

function niceStep(max, target) {
  const raw = max / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

function node(tag, attrs = {}, text = null) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) n.setAttribute(k, String(v));
  if (text !== null) n.textContent = text;
  return n;
}

/**
 * Draw `model` as an SVG element `width` pixels wide.
 * opts: title (drawn inside, for exports), background (fill it), scale (type size factor).
 */
export function drawChart(model, width, opts = {}) {
  const p = palette();
  const k = opts.scale || 1;
  // the smallest text in the chart is 12.5 units: a scale of 1.6 draws it at 20 px (a projector's floor)
  const narrow = width < 860; // labels above the bars: a tablet shows them whole
  const fs = 15 * k;
  const x0 = opts.title ? 24 * k : 0; // page margin of an exported image
  const labelW = narrow ? 0 : x0 + Math.min(330 * k, width * 0.33);
  const valueW = (narrow ? 72 : 96) * k;
  const left = labelW + (narrow ? 8 : 16) * k;
  const right = width - valueW;
  const barH = (narrow ? 20 : 24) * k;
  const barGap = 5 * k;
  const catGap = (narrow ? 14 : 16) * k;
  const labelH = narrow ? 34 * k : 0;
  let y = 0;
  const svg = node("svg", { xmlns: SVGNS, width, viewBox: `0 0 ${width} 100`, "font-family": FONT, "font-size": fs });
  const defs = node("defs");
  const pat = node("pattern", { id: "stripes", width: 10, height: 10, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
  pat.append(node("rect", { width: 10, height: 10, fill: "white", "fill-opacity": 0.0 }),
    node("rect", { width: 5, height: 10, fill: "white", "fill-opacity": 0.28 }));
  defs.append(pat);
  svg.append(defs);
  const bgRect = opts.background ? node("rect", { x: 0, y: 0, width, height: 100, fill: p.bg }) : null;
  if (bgRect) svg.append(bgRect);

  const pad = opts.title ? 24 * k : 4 * k;
  y = pad;
  if (opts.title) {
    svg.append(node("text", { x: 24 * k, y: y + 22 * k, fill: p.text, "font-size": 26 * k, "font-weight": 800 }, opts.title));
    y += 34 * k;
    if (opts.subtitle) { // wrapped, never cut: it says what was measured and how
      for (const line of wrap(opts.subtitle, width - 48 * k, 15 * k)) {
        svg.append(node("text", { x: 24 * k, y: y + 14 * k, fill: p.muted, "font-size": 15 * k }, line));
        y += 20 * k;
      }
      y += 8 * k;
    }
  }

  // legend, wrapped to the width
  const lx0 = narrow ? 0 : left - x0;
  const legend = node("g", { transform: `translate(${x0 + lx0},${y})` });
  const items = [["A", "Server A · zeromode=plugin"], ["B", "Server B · zeromode=emulate"], ["N", "no write-zeroes"]];
  const seen = new Set(model.cats.flatMap((c) => c.bars.map((b) => b.group || "N")));
  const entries = items.filter(([g]) => seen.has(g)).map(([g, text]) => [g, narrow ? text.split(" · ")[0] : text]);
  entries.push(["ref", "2019 reference"]);
  let lx = 0;
  let ly = 0;
  for (const [g, text] of entries) {
    const w = textWidth(text, 14 * k) + 40 * k;
    if (lx > 0 && x0 + lx0 + lx + w > width) { lx = 0; ly += 22 * k; }
    if (g === "ref") legend.append(node("path", { d: diamond(lx + 7 * k, ly + 7 * k, 7 * k), fill: p.ref, stroke: p.bg, "stroke-width": 1.5 }));
    else legend.append(node("rect", { x: lx, y: ly, width: 14 * k, height: 14 * k, rx: 3 * k, fill: p[g] }));
    legend.append(node("text", { x: lx + 20 * k, y: ly + 12 * k, fill: p.text, "font-size": 14 * k }, text));
    lx += w;
  }
  svg.append(legend);
  y += ly + 30 * k;

  const step = niceStep(model.max, narrow ? 4 : 8);
  const max = Math.ceil((model.max * 1.04) / step) * step;
  const xs = (v) => left + (Math.max(0, v) / max) * (right - left);
  const plotTop = y;
  let footnote = false;
  let contended = false; // a time measured while other work kept the machine busy
  let outside = false;
  const grid = node("g");
  svg.append(grid);

  for (const cat of model.cats) {
    const g = node("g", { "data-category": cat.key });
    if (narrow) {
      g.append(node("text", { x: 0, y: y + 15 * k, fill: p.text, "font-weight": 700 }, fit(cat.label, width - 4, fs, 700)));
      g.append(node("text", { x: 0, y: y + 30 * k, fill: p.muted, "font-size": 12.5 * k }, cat.sub || ""));
      y += labelH;
    } else {
      const h = cat.bars.length * barH + (cat.bars.length - 1) * barGap;
      const mid = y + h / 2;
      const room = labelW - x0 - 4 * k;
      g.append(node("text", { x: labelW, y: mid - 1 * k, fill: p.text, "font-weight": 700, "text-anchor": "end" },
        fit(cat.label, room, fs, 700)));
      g.append(node("text", { x: labelW, y: mid + 16 * k, fill: p.muted, "font-size": 12.5 * k, "text-anchor": "end" },
        fit(cat.sub || "", room, 12.5 * k)));
    }
    for (const bar of cat.bars) {
      const color = bar.state === "failed" ? p.bad : p[bar.group || "N"] || p.N;
      const w = bar.value ? Math.max(2, xs(bar.value) - left) : 0;
      const b = node("g", { "data-row": bar.row.key, "data-state": bar.state, class: "bar" });
      b.append(node("rect", { x: left, y, width: right - left, height: barH, rx: 4 * k, fill: p.track }));
      if (w) {
        b.append(node("rect", { x: left, y, width: w, height: barH, rx: 4 * k, fill: color, "fill-opacity": bar.stale ? 0.45 : 1 }));
        if (bar.state === "running") b.append(node("rect", { x: left, y, width: w, height: barH, rx: 4 * k, fill: "url(#stripes)" }));
      }
      let text = "";
      if (bar.state === "running") text = `${f.seconds(bar.value, 1)}…`;
      else if (bar.state === "queued") text = bar.value ? `${f.seconds(bar.value)} · queued` : "queued";
      else if (bar.state === "failed") text = bar.value ? `${f.seconds(bar.value)} ✗` : "failed";
      else if (bar.state === "done") text = f.seconds(bar.value);
      if (text && differs(bar.row)) { text += " †"; footnote = true; }
      if (text && bar.state !== "running" && bar.run && bar.run.contended) { text += " ⚠"; contended = true; }
      // a measured run outside its expectation's interval is marked (lab.measure.expectation)
      const verdict = bar.state === "done" && bar.run ? bar.run.model_verdict : null;
      if (text && OUTSIDE[verdict]) { text += ` ${OUTSIDE[verdict]}`; outside = true; }
      // the value goes right of the bar, and right of the reference marker when they meet
      let tx = w ? left + w + 6 * k : left + 8 * k;
      if (bar.ref && Math.abs(xs(bar.ref) - (left + w)) < 60 * k && xs(bar.ref) + 8 * k > tx - 6 * k) tx = xs(bar.ref) + 10 * k;
      b.append(node("text", { x: Math.min(tx, right + 4 * k), y: y + barH / 2 + 5 * k, fill: bar.state === "failed" ? p.bad : p.text,
        "font-weight": 700, "font-size": 14 * k }, text));
      const run = bar.state === "done" ? bar.run : null;
      if (run && run.expected_low_s != null && run.expected_high_s != null) {
        // the interval expected_coverage of runs land in: a whisker across the bar
        const cy = y + barH / 2;
        const [lo, hi] = [xs(run.expected_low_s), xs(run.expected_high_s)];
        const wk = node("g", { class: "interval", stroke: p.text, "stroke-width": 1.5 * k, "stroke-opacity": 0.8 });
        wk.append(node("line", { x1: lo, x2: hi, y1: cy, y2: cy }), node("line", { x1: lo, x2: lo, y1: cy - 5 * k, y2: cy + 5 * k }),
          node("line", { x1: hi, x2: hi, y1: cy - 5 * k, y2: cy + 5 * k }),
          node("title", {}, `${bar.row.label}: expected ${f.interval(run.expected_s, run.expected_low_s, run.expected_high_s)}`
            + (OUTSIDE[run.model_verdict] ? `; measured ${f.seconds(run.duration_s)}: ${f.outsideText(run)}` : "")));
        b.append(wk);
      }
      if (bar.ref) {
        const rx = xs(bar.ref);
        b.append(node("line", { x1: rx, x2: rx, y1: y - 2 * k, y2: y + barH + 2 * k, stroke: p.ref, "stroke-width": 2 * k }));
        b.append(node("path", { d: diamond(rx, y + barH / 2, 6.5 * k), fill: p.ref, stroke: p.bg, "stroke-width": 1.5 * k },
        ));
        const t = node("title", {}, `${bar.row.label}: 2019 reference ${f.seconds(bar.ref)}`);
        b.append(t);
      }
      g.append(b);
      y += barH + barGap;
    }
    y += catGap - barGap;
    svg.append(g);
  }

  // grid and axis, drawn under the bars
  const plotBottom = y - catGap + 8 * k;
  for (let v = 0; v <= max + 1e-9; v += step) {
    const x = xs(v);
    grid.append(node("line", { x1: x, x2: x, y1: plotTop - 4 * k, y2: plotBottom, stroke: p.grid, "stroke-width": 1 }));
    grid.append(node("text", { x, y: plotBottom + 18 * k, fill: p.muted, "font-size": 13 * k, "text-anchor": "middle" },
      `${+v.toFixed(2)}`));
  }
  grid.append(node("text", { x: right, y: plotBottom + 36 * k, fill: p.muted, "font-size": 13 * k, "text-anchor": "end" }, "seconds (copy time)"));
  let height = plotBottom + 46 * k + (opts.title ? 12 * k : 0);
  if (outside) {
    height += 14 * k;
    const lines = wrap("▲ slower, ▼ faster than this machine's calibrated expectation (its interval: the whisker)",
      width - x0 * 2 - 8, 13 * k);
    lines.forEach((l, i) => svg.append(node("text", { x: x0, y: height + i * 18 * k, fill: p.muted, "font-size": 13 * k }, l)));
    height += (lines.length - 1) * 18 * k + 8 * k;
  }
  if (contended) {
    height += 14 * k;
    svg.append(node("text", { x: x0, y: height, fill: p.muted, "font-size": 13 * k },
      "⚠ contended: other work kept the machine busy during that run; its time is not a clean measurement"));
    height += 8 * k;
  }
  if (footnote) {
    const words = "† On this lab's nbdkit (1.32) this row cannot behave as in 2019: zeromode=emulate now runs in nbdkit's core, which refuses the fast-zero flag before the nozero filter could ignore it.";
    const lines = wrap(words, width - x0 * 2 - 8, 13 * k);
    height += 14 * k;
    lines.forEach((l, i) => svg.append(node("text", { x: x0, y: height + i * 18 * k, fill: p.muted, "font-size": 13 * k }, l)));
    height += lines.length * 18 * k;
  }
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  if (bgRect) bgRect.setAttribute("height", height);
  return svg;
}

const OUTSIDE = { "slower-than-model": "▲", "faster-than-model": "▼" };

// SVG text does not wrap by itself: the words in lines no wider than `room` at font size `size`.
function wrap(words, room, size) {
  const lines = [];
  let line = "";
  for (const w of words.split(" ")) {
    const next = line ? `${line} ${w}` : w;
    if (line && textWidth(next, size) > room) { lines.push(line); line = w; } else line = next;
  }
  lines.push(line);
  return lines;
}

// A reference row whose counts or time this nbdkit cannot reproduce (lab.domain.scenarios notes it).
export function differs(row) {
  const note = row.reference && row.reference.nbdkit_1_32;
  return Boolean(note && (note.write_ops !== undefined || note.predicted_s !== undefined));
}

function diamond(cx, cy, r) {
  return `M${cx} ${cy - r}L${cx + r} ${cy}L${cx} ${cy + r}L${cx - r} ${cy}Z`;
}

// --- export for slides ------------------------------------------------------------------
function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 5000);
}

export function svgText(svg) {
  return `<?xml version="1.0" encoding="UTF-8"?>\n${new XMLSerializer().serializeToString(svg)}`;
}

export function exportSvg(svg, name = "fastzero-chart.svg") {
  download(new Blob([svgText(svg)], { type: "image/svg+xml" }), name);
}

export function exportPng(svg, name = "fastzero-chart.png", pixelRatio = 2) {
  return new Promise((resolve, reject) => {
    const width = Number(svg.getAttribute("width"));
    const height = Number(svg.getAttribute("height"));
    const img = new Image();
    const url = URL.createObjectURL(new Blob([svgText(svg)], { type: "image/svg+xml" }));
    img.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(width * pixelRatio);
      canvas.height = Math.round(height * pixelRatio);
      const ctx = canvas.getContext("2d");
      ctx.scale(pixelRatio, pixelRatio);
      ctx.drawImage(img, 0, 0, width, height);
      URL.revokeObjectURL(url);
      canvas.toBlob((blob) => {
        if (!blob) { reject(new Error("PNG export failed")); return; }
        download(blob, name);
        resolve(blob);
      }, "image/png");
    };
    img.onerror = () => { URL.revokeObjectURL(url); reject(new Error("PNG export failed")); };
    img.src = url;
  });
}

export { FINAL };
