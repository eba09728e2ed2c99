// The disk map: the destination drawn as cells by offset, each request painted as it lands,
// and a small requests-per-second chart. The cell letters and the painting rule are the
// server's (lab/nbd/diskmap.py, `Cells`): a request paints the sub-cells it touches with its
// kind, in the order the requests started; a cell shows the kind covering most of it and, in
// its lower half, a second kind it also holds (a data extent and a hole in one cell show both).
// A refused fast zero changes nothing on disk: it flashes, and its cells keep a mark (a band
// along their top). BLOCK_STATUS only flashes.

import { CODES, Cells, cellSizeFor, unrle } from "./cells.js";
import { el } from "./format.js";

export { cellSizeFor, unrle };

// letter -> [words for the legend, CSS colour variable]; the letters are cells.js's CODES
export const KINDS = {
  D: ["data written", "--map-data"],
  W: ["zero carried out as writes", "--map-zero-write"],
  P: ["pre-zero pass, written out", "--map-prezero-write"],
  Z: ["zero as metadata", "--map-zero"],
  p: ["pre-zero pass, as metadata", "--map-prezero"],
  T: ["trim", "--map-trim"],
  R: ["refused fast zero (marked)", "--map-refused"],
  S: ["BLOCK_STATUS (flash)", "--map-status"],
  ".": ["not written", "--map-empty"],
};
const FLASH_MS = 450;

// A map as it travels ({cells, under, marks, cell_size}, run-length encoded) into setCells().
export function showMap(map, m) {
  map.setCells(unrle(m.cells), m.cell_size, { under: m.under ? unrle(m.under) : null, marks: m.marks ? unrle(m.marks) : null });
}

// The theme's colours, read once per theme: reading styles in every draw would force the
// browser to recompute the page's style (and, with a long history table, cost a long task).
let palette = null;
new MutationObserver(() => { palette = null; }).observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
function colors() {
  if (palette) return palette;
  const cs = getComputedStyle(document.documentElement);
  palette = { muted: cs.getPropertyValue("--muted").trim() };
  for (const [code, [, v]] of Object.entries(KINDS)) palette[code] = cs.getPropertyValue(v).trim() || "#888";
  return palette;
}

// Canvas widths come from a ResizeObserver, never from reading layout while drawing.
const widths = new WeakMap();
const sizer = new ResizeObserver((entries) => {
  for (const e of entries) {
    const w = Math.floor(e.contentRect.width);
    if (w && widths.get(e.target) !== w) { widths.set(e.target, w); e.target._redraw?.(); }
  }
});
function widthOf(canvas, fallback) {
  if (!canvas._sized) { canvas._sized = true; sizer.observe(canvas); }
  return widths.get(canvas) || fallback;
}

export function counts(cells) {
  const c = {};
  for (const ch of cells) c[ch] = (c[ch] || 0) + 1;
  return c;
}

function describe(cells, under = null, marks = null) {
  const c = counts(cells);
  const parts = Object.entries(KINDS).filter(([code]) => c[code]).map(([code, [words]]) => `${c[code]} ${words}`);
  const two = under ? under.filter((u, i) => u !== cells[i]).length : 0;
  const refused = marks ? marks.filter((m) => m === "R").length : 0;
  return `Disk map, ${cells.length} cells: ${parts.join(", ")}${two ? `; ${two} cells hold two kinds` : ""}`
    + `${refused ? `; ${refused} cells where a fast zero was refused` : ""}`;
}

/** A canvas of cells; `rows` = how many lines the disk wraps onto (1 = a strip). */
export class DiskMap {
  constructor({ rows = 1, height = 12, label = "Disk map" } = {}) {
    this.rows = rows;
    this.height = height;
    this.cells = [];
    this.under = null; // each cell's second kind, where one holds two
    this.marks = null; // "R" where a fast zero was refused
    this.key = "";
    this.cellSize = 0;
    this.flashes = []; // [code, first, last, until]
    this.canvas = el("canvas", { class: "diskmap", role: "img", "aria-label": label, height });
    this.canvas.style.height = `${height}px`;
    this.node = this.canvas;
    this._timer = null;
    this.canvas._redraw = () => this.draw();
  }

  // `under`: each cell's second kind (or null: one kind each); `marks`: "R" where a fast zero was refused.
  setCells(cells, cellSize, { under = null, marks = null } = {}) {
    const arr = typeof cells === "string" ? [...cells] : cells;
    const und = under && under.length === arr.length ? [...under] : null;
    const mk = marks && marks.length === arr.length ? [...marks] : null;
    const text = arr.join("");
    const key = `${text}|${und ? und.join("") : ""}|${mk ? mk.join("") : ""}`;
    this.cellSize = cellSize || this.cellSize;
    if (key === this.key) return;
    this.key = key;
    this.cells = arr;
    this.under = und;
    this.marks = mk;
    this.canvas.dataset.cells = text;
    if (und) this.canvas.dataset.under = und.join(""); else delete this.canvas.dataset.under;
    if (mk) this.canvas.dataset.marks = mk.join(""); else delete this.canvas.dataset.marks;
    this.canvas.setAttribute("aria-label", describe(arr, und, mk));
    this.draw();
  }

  // A replay from the trace: the cells as the service paints them, request by request.
  reset(size) {
    this.cellSize = cellSizeFor(size);
    this.painter = new Cells(size, this.cellSize);
    this.flashes = [];
    this.commit();
  }

  // One trace row: paint it (or mark it: a refused fast zero), and flash what changes nothing.
  apply(row) {
    const code = CODES[row.kind];
    const painted = this.painter.paint(row);
    if (code === "R" || code === "S") {
      const first = Math.floor(row.offset / this.cellSize);
      const last = Math.min(this.painter.n, Math.ceil((row.offset + (row.count || this.cellSize)) / this.cellSize));
      this.flash(code, first, last);
    }
    return painted;
  }

  flash(code, first, last) {
    this.flashes.push([code, first, last, performance.now() + FLASH_MS]);
    this.canvas.dataset.flashed = code;
    this.draw();
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.draw(), FLASH_MS + 20);
  }

  commit() {
    const { cells, under, marks } = this.painter.layers();
    const two = under.some((c, i) => c !== cells[i]);
    this.setCells([...cells], this.cellSize, { under: two ? [...under] : null, marks: marks.includes("R") ? [...marks] : null });
  }

  draw() {
    const c = this.canvas;
    const width = Math.max(40, widthOf(c, 300));
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(width * dpr)) c.width = Math.round(width * dpr);
    c.height = Math.round(this.height * dpr);
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, this.height);
    const n = this.cells.length;
    if (!n) return;
    const pal = colors();
    const perRow = Math.ceil(n / this.rows);
    const cw = width / perRow;
    const rh = this.height / this.rows;
    const gap = cw > 3 ? 0.5 : 0;
    const vgap = this.rows > 1 ? 1 : 0;
    const w = Math.max(0.5, cw - gap);
    for (let i = 0; i < n; i++) {
      const r = Math.floor(i / perRow);
      const x = (i % perRow) * cw;
      ctx.fillStyle = pal[this.cells[i]] || pal["."];
      const two = this.under && this.under[i] !== this.cells[i];
      ctx.fillRect(x, r * rh, w, two ? (rh - vgap) / 2 : rh - vgap);
      if (two) { // the cell's second kind fills its lower half
        ctx.fillStyle = pal[this.under[i]] || pal["."];
        ctx.fillRect(x, r * rh + (rh - vgap) / 2, w, (rh - vgap) / 2);
      }
      if (this.marks && this.marks[i] === "R") { // a refused fast zero: a band that stays
        ctx.fillStyle = pal.R;
        ctx.fillRect(x, r * rh, w, Math.max(2, (rh - vgap) * 0.3));
      }
    }
    const now = performance.now();
    this.flashes = this.flashes.filter((f) => f[3] > now);
    for (const [code, first, last] of this.flashes) {
      ctx.fillStyle = pal[code];
      for (let i = first; i < last; i++) {
        const r = Math.floor(i / perRow);
        ctx.fillRect((i % perRow) * cw, r * rh, Math.max(0.5, cw - gap), rh - vgap);
      }
    }
  }
}

export function legend(codes = ["D", "W", "P", "Z", "p", "R", "."]) {
  return el("ul", { class: "map-legend", "aria-label": "Disk map colours" },
    codes.map((code) => el("li", {}, el("span", { class: "swatch", style: `background: var(${KINDS[code][1]})` }), KINDS[code][0])));
}

// --- requests per second ------------------------------------------------------------------

/** samples: [{t, w, z}] cumulative counts at time t (s). Draws writes/s and zeroes/s as lines. */
export function drawRate(canvas, samples, { height = 48, span = null, label = "requests per second" } = {}) {
  const width = Math.max(60, widthOf(canvas, 140));
  canvas._redraw = () => drawRate(canvas, samples, { height, span, label });
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const tEnd = span || (samples.length ? samples[samples.length - 1].t : 0);
  if (samples.length < 2 || tEnd <= 0) { canvas.setAttribute("aria-label", `${label}: no data yet`); return; }
  const bins = Math.max(4, Math.min(60, Math.round(tEnd / 0.25)));
  const dt = tEnd / bins;
  const rate = { w: Array(bins).fill(0), z: Array(bins).fill(0) };
  // cumulative counts interpolated at the bin edges
  const at = (t, k) => {
    let i = 0;
    while (i < samples.length - 1 && samples[i + 1].t <= t) i++;
    const a = samples[i];
    const b = samples[Math.min(samples.length - 1, i + 1)];
    if (b.t === a.t || t <= a.t) return a[k];
    return a[k] + ((b[k] - a[k]) * (Math.min(t, b.t) - a.t)) / (b.t - a.t);
  };
  for (let i = 0; i < bins; i++) {
    for (const k of ["w", "z"]) rate[k][i] = (at((i + 1) * dt, k) - at(i * dt, k)) / dt;
  }
  const max = Math.max(1, ...rate.w, ...rate.z);
  const pal = colors();
  const line = (arr, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    arr.forEach((v, i) => {
      const x = ((i + 0.5) / bins) * width;
      const y = height - 2 - (v / max) * (height - 14);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  };
  line(rate.w, pal.D);
  line(rate.z, pal.Z);
  ctx.fillStyle = pal.muted;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(`${Math.round(max)}/s`, 2, 10);
  const peakW = Math.round(Math.max(...rate.w));
  const peakZ = Math.round(Math.max(...rate.z));
  canvas.setAttribute("aria-label", `${label}: peak ${peakW} writes/s, ${peakZ} zeroes/s`);
  canvas.dataset.peakWrites = String(peakW);
}
