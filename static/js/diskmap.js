// The disk map: the destination drawn as cells by offset, each request painted as it lands,
// and a small requests-per-second chart. The cell letters and the painting rule are the
// server's (lab/nbd/diskmap.py): a request paints every cell it touches with its kind, in the
// order the requests started; refused fast zeroes and BLOCK_STATUS only flash.

import { el } from "./format.js";

// letter -> [kind in the trace, words for the legend, CSS colour variable]
export const KINDS = {
  D: ["data", "data written", "--map-data"],
  W: ["zero-write", "zero carried out as writes", "--map-zero-write"],
  P: ["prezero-write", "pre-zero pass, written out", "--map-prezero-write"],
  Z: ["zero", "zero as metadata", "--map-zero"],
  p: ["prezero", "pre-zero pass, as metadata", "--map-prezero"],
  T: ["trim", "trim", "--map-trim"],
  R: ["refused", "refused fast zero (flash)", "--map-refused"],
  S: ["status", "BLOCK_STATUS (flash)", "--map-status"],
  ".": ["untouched", "not written", "--map-empty"],
};
const PAINTS = new Set(["D", "W", "P", "Z", "p", "T"]);
export const CODE_OF = Object.fromEntries(Object.entries(KINDS).map(([code, [kind]]) => [kind, code]));
const FLASH_MS = 450;

export function unrle(text) {
  let out = "";
  let n = "";
  for (const ch of text || "") {
    if (ch >= "0" && ch <= "9") n += ch;
    else { out += ch.repeat(n ? parseInt(n, 10) : 1); n = ""; }
  }
  return out;
}

export function cellSizeFor(size) {
  let cell = 4096;
  while (cell * 512 < size) cell *= 2;
  return cell;
}

// The same rule as lab.nbd.diskmap.paint(), for a replay and for the tests.
export function paintRow(cells, cellSize, row) {
  const code = CODE_OF[row.kind];
  if (!PAINTS.has(code) || !(row.count > 0)) return false;
  const first = Math.floor(row.offset / cellSize);
  const last = Math.min(cells.length, Math.ceil((row.offset + row.count) / cellSize));
  for (let i = first; i < last; i++) cells[i] = code;
  return true;
}

// The theme's colours, read once per theme: reading styles in every draw would force the
// browser to recompute the page's style (and, with a long history table, cost a long task).
let palette = null;
new MutationObserver(() => { palette = null; }).observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
function colors() {
  if (palette) return palette;
  const cs = getComputedStyle(document.documentElement);
  palette = { muted: cs.getPropertyValue("--muted").trim() };
  for (const [code, [, , v]] of Object.entries(KINDS)) palette[code] = cs.getPropertyValue(v).trim() || "#888";
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

function describe(cells) {
  const c = counts(cells);
  const parts = Object.entries(KINDS).filter(([code]) => c[code]).map(([code, [, words]]) => `${c[code]} ${words}`);
  return `Disk map, ${cells.length} cells: ${parts.join(", ")}`;
}

/** A canvas of cells; `rows` = how many lines the disk wraps onto (1 = a strip). */
export class DiskMap {
  constructor({ rows = 1, height = 12, label = "Disk map" } = {}) {
    this.rows = rows;
    this.height = height;
    this.cells = [];
    this.cellSize = 0;
    this.flashes = []; // [code, first, last, until]
    this.canvas = el("canvas", { class: "diskmap", role: "img", "aria-label": label, height });
    this.canvas.style.height = `${height}px`;
    this.node = this.canvas;
    this._timer = null;
    this.canvas._redraw = () => this.draw();
  }

  setCells(cells, cellSize) {
    const arr = typeof cells === "string" ? [...cells] : cells;
    const same = arr.length === this.cells.length && arr.every((c, i) => c === this.cells[i]);
    this.cellSize = cellSize || this.cellSize;
    if (same) return;
    this.cells = arr;
    this.canvas.dataset.cells = arr.join("");
    this.canvas.setAttribute("aria-label", describe(arr));
    this.draw();
  }

  reset(size) {
    this.cellSize = cellSizeFor(size);
    this.cells = Array(Math.ceil(size / this.cellSize)).fill(".");
    this.flashes = [];
    this.canvas.dataset.cells = this.cells.join("");
    this.draw();
  }

  // One trace row: paint it, or flash it (refused fast zero, BLOCK_STATUS).
  apply(row) {
    const code = CODE_OF[row.kind];
    if (paintRow(this.cells, this.cellSize, row)) return;
    if (code === "R" || code === "S") {
      const first = Math.floor(row.offset / this.cellSize);
      const last = Math.min(this.cells.length, Math.ceil((row.offset + (row.count || this.cellSize)) / this.cellSize));
      this.flash(code, first, last);
    }
  }

  flash(code, first, last) {
    this.flashes.push([code, first, last, performance.now() + FLASH_MS]);
    this.canvas.dataset.flashed = code;
    this.draw();
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.draw(), FLASH_MS + 20);
  }

  commit() {
    this.canvas.dataset.cells = this.cells.join("");
    this.canvas.setAttribute("aria-label", describe(this.cells));
    this.draw();
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
    for (let i = 0; i < n; i++) {
      const r = Math.floor(i / perRow);
      const x = (i % perRow) * cw;
      ctx.fillStyle = pal[this.cells[i]] || pal["."];
      ctx.fillRect(x, r * rh, Math.max(0.5, cw - gap), rh - vgap);
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
    codes.map((code) => el("li", {}, el("span", { class: "swatch", style: `background: var(${KINDS[code][2]})` }), KINDS[code][1])));
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
