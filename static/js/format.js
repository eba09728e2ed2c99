// Formatting and tiny DOM helpers shared by every page (the one `$` and the one `el`; the one
// request helper is api.js's `request`).

import { PART_WORDS, VERDICT_WORDS } from "./vocabulary.js";

// The element with this id, or null.
export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function seconds(s, digits = 2) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  return `${Number(s).toFixed(digits)} s`;
}

// An expectation with its interval, "3.3 s (3.1-3.5)": two significant digits at least, more until the
// bounds differ from the middle (lab.domain.units.format_interval spells it alike, with a hyphen).
export function interval(expected, low, high) {
  if (expected === null || expected === undefined) return "–";
  if (low === null || low === undefined || high === null || high === undefined) return seconds(expected);
  let d = expected > 0 ? Math.max(1, 1 - Math.floor(Math.log10(expected))) : 1;
  while (d < 4 && new Set([low, expected, high].map((v) => Number(v).toFixed(d))).size < 3) d++;
  return `${Number(expected).toFixed(d)} s (${Number(low).toFixed(d)}–${Number(high).toFixed(d)})`;
}

// A run outside its expectation's interval, in words ("" when within or not judged).
export function outsideText(run) {
  const v = run && run.model_verdict !== "within" ? VERDICT_WORDS[run.model_verdict] : "";
  if (!v) return "";
  const part = PART_WORDS[run.model_term];
  return part ? `${v} (${part} part most likely ${run.model_verdict === "slower-than-model" ? "short" : "over"})` : v;
}

// Numbers the server normalised, spelt as lab.domain.units spells them (human_bytes, format_size,
// format_delay; tests/test_units_spec.py holds the cases both must agree on). No parsing here.
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v.toFixed(0)} B` : `${v.toFixed(1)} ${units[i]}`;
}

// Shortest exact binary-unit spelling: 262144 -> "256k".
export function size(n) {
  if (n === null || n === undefined) return "–";
  for (const [suffix, mult] of [["T", 2 ** 40], ["G", 2 ** 30], ["M", 2 ** 20], ["k", 2 ** 10]]) {
    if (n && n % mult === 0) return `${n / mult}${suffix}`;
  }
  return String(n);
}

export function delay(ms) {
  return ms === null || ms === undefined ? "–" : `${Math.trunc(ms)}ms`;
}

export function clock(epoch) {
  if (!epoch) return "–";
  const d = new Date(epoch * 1000);
  const today = new Date();
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return d.toDateString() === today.toDateString() ? hm : `${d.toLocaleDateString()} ${hm}`;
}

// "A" for a server whose zeroing is metadata, "B" when it falls back to writes, "N" otherwise.
export function group(server) {
  if (!server) return "N";
  if (server.zeromode === "plugin" || server.zeromode === "notrim") return "A";
  if (server.zeromode === "emulate") return "B";
  return "N";
}

export function groupName(g) {
  return g === "A" ? "Server A" : g === "B" ? "Server B" : "No zeroes";
}

export function serverSummary(s) {
  if (!s) return "";
  return `zeromode=${s.zeromode} fastzeromode=${s.fastzeromode}`;
}

// The geometry in a few characters, or "" when it is the talk's own (100M, 20ms/5ms, ...).
export function shortGeometry(s, defaults) {
  if (!s || !defaults) return "";
  const parts = [];
  if (s.size !== defaults.size) parts.push(size(s.size));
  if (s.pattern !== defaults.pattern) parts.push(s.pattern);
  if (s.maxdata !== defaults.maxdata) parts.push(`maxdata ${size(s.maxdata)}`);
  if (s.delay_write !== defaults.delay_write || s.delay_zero !== defaults.delay_zero) {
    parts.push(`w ${delay(s.delay_write)} z ${delay(s.delay_zero)}`);
  }
  return parts.join(" · ");
}

export function geometry(s) {
  if (!s) return "";
  return `${size(s.size)} ${s.pattern} · maxdata ${size(s.maxdata)} · w ${delay(s.delay_write)} z ${delay(s.delay_zero)}`;
}

export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

// Redraws at most once a frame however many events arrive.
export function throttleFrame(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; fn(); });
  };
}
