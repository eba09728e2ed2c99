// The lab page: a run form with the server's advertised flags, live runs, history.

import { ApiError, api, config, isPresenter } from "./api.js";
import { init, onKey, onRoleChange, showMessage } from "./common.js";
import * as f from "./format.js";
import { FINAL, runs, start, store, subscribe } from "./live.js";
import { failed, renderCard, renderRow } from "./runview.js";

const $ = (id) => document.getElementById(id);
const el = f.el;
const form = $("run-form");
const FIELDS = ["zeromode", "fastzeromode", "size", "pattern", "maxdata", "delay_write", "delay_zero",
  "kind", "plugin", "storage", "disk_format"];
const KIND_FIELDS = ["kind", "plugin", "storage", "disk_format"]; // what sits under the filter stack
const RECENT_MS = 20000; // a finished run stays among the live cards this long
const HISTORY_PAGE = 25;

// --- the form -----------------------------------------------------------------------
const PRESETS = {
  A: { zeromode: "plugin", fastzeromode: "default" },
  B: { zeromode: "emulate", fastzeromode: "default" },
  baseline: { zeromode: "none", fastzeromode: "default" },
};

function formValues() {
  const server = {};
  for (const name of FIELDS) {
    const v = form.elements[name].value.trim();
    if (v !== "") server[name] = v;
  }
  return { client: form.elements.client.value, server };
}

function markInvalid(field) {
  for (const name of FIELDS) form.elements[name].removeAttribute("aria-invalid");
  if (field && form.elements[field]) {
    form.elements[field].setAttribute("aria-invalid", "true");
    form.elements[field].focus();
  }
}

function showFormError(text, field = null) {
  const p = $("form-error");
  p.textContent = text || "";
  p.hidden = !text;
  markInvalid(field);
}

function describeClient() {
  const c = config.clients.find((x) => x.id === form.elements.client.value);
  $("client-desc").textContent = c ? c.description || "" : "";
  $("client-desc").title = c ? c.description || "" : "";
}

function applyPreset(name) {
  const p = PRESETS[name];
  if (!p) return;
  for (const [k, v] of Object.entries(p)) form.elements[k].value = v;
  probeSoon();
  updateHint();
}

// --- advertised flags: a short-lived server, probed and deleted ---------------------
const flagCache = new Map();
let probeTimer = null;
let probeSeq = 0;

function probeKey(v) {
  return [v.server.zeromode, v.server.fastzeromode, v.server.maxdata, v.server.size,
    ...KIND_FIELDS.map((k) => v.server[k] || "")].join("|");
}

function renderFlags(flags, note = null) {
  const list = $("flags");
  if (!flags) {
    list.replaceChildren(el("li", { class: "flag flag-unknown" }, note || "probing…"));
    return;
  }
  // The four flags the story turns on; the probe reports more (fua, multi_conn, ...).
  const items = ["can_zero", "can_fast_zero", "can_trim", "can_flush"]
    .filter((k) => typeof flags[k] === "boolean")
    .map((k) => [k, flags[k]])
    .map(([k, v]) => el("li", { class: `flag ${v ? "flag-yes" : "flag-no"}`, title: v ? "advertised" : "not advertised" },
      `${v ? "✓" : "✗"} ${k}`));
  list.replaceChildren(...items);
}

function probeSoon() {
  clearTimeout(probeTimer);
  if (!isPresenter()) { renderFlags(null, "shown to the presenter"); return; }
  const v = formValues();
  const key = probeKey(v);
  if (flagCache.has(key)) { renderFlags(flagCache.get(key)); return; }
  renderFlags(null);
  probeTimer = setTimeout(() => probe(v, key), 350);
}

async function probe(v, key) {
  const seq = ++probeSeq;
  // The probe server needs no delays or data: only what shapes its flags.
  const fields = { zeromode: v.server.zeromode, fastzeromode: v.server.fastzeromode, size: v.server.size,
    maxdata: v.server.maxdata, delay_write: 0, delay_zero: 0 };
  for (const k of KIND_FIELDS) if (v.server[k]) fields[k] = v.server[k];
  try {
    const server = await api.createServer(fields);
    if (server && server.id) api.deleteServer(server.id).catch(() => {});
    flagCache.set(key, server.flags || {});
    if (seq === probeSeq) renderFlags(server.flags || {});
  } catch (err) {
    if (seq !== probeSeq) return;
    renderFlags(null, err.status === 422 ? `cannot probe: ${err.message}` : `cannot probe: ${err.message}`);
  }
}

// What this setup should cost, from runs already measured with the same settings.
function updateHint() {
  const v = formValues();
  const same = runs().filter((r) => r.status === "succeeded" && r.client === v.client && r.server &&
    r.server.zeromode === v.server.zeromode && r.server.fastzeromode === v.server.fastzeromode &&
    r.server.size === f.parseSize(v.server.size || "100M") && r.server.pattern === (v.server.pattern || "alternate:1M") &&
    r.server.maxdata === f.parseSize(v.server.maxdata || "256k") &&
    r.server.delay_write === f.parseDelay(v.server.delay_write || "20ms") &&
    r.server.delay_zero === f.parseDelay(v.server.delay_zero || "5ms"));
  const hint = $("run-hint");
  hint.textContent = same.length
    ? `Measured before with these settings: ${f.seconds(same[0].duration_s)} (${f.plural(same.length, "run")})`
    : "Starts a fresh server with these settings.";
}

async function submitRun(e) {
  if (e) e.preventDefault();
  const body = formValues();
  showFormError(null);
  const btn = $("run-btn");
  btn.disabled = true;
  try {
    const run = await api.startRun(body);
    if (run && run.id) {
      store.runs.set(run.id, { ...run, ...(store.runs.get(run.id) || {}) });
      redraw();
      // one column: the live list is above the form, out of sight after pressing Run
      if (matchMedia("(max-width: 900px)").matches) $("live-title").scrollIntoView({ behavior: "smooth" });
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 422) showFormError(err.message, err.field);
    else showMessage(err.message, "error");
  } finally {
    btn.disabled = false;
  }
}

// --- live cards and history ---------------------------------------------------------
const cards = new Map();
const seenFinal = new Set();
const finishedAt = new Map(); // id -> when this page saw it finish (ms)
let historyAll = false;
let firstDraw = true;

function redrawLive() {
  const now = Date.now();
  const live = runs().filter((r) => !FINAL.has(r.status) || (finishedAt.has(r.id) && now - finishedAt.get(r.id) < RECENT_MS))
    .reverse(); // oldest first: the queue reads top to bottom
  const list = $("live-list");
  const keep = new Set(live.map((r) => r.id));
  for (const [id, node] of cards) if (!keep.has(id)) { node.remove(); cards.delete(id); }
  live.forEach((run, i) => {
    const node = renderCard(run, cards.get(run.id));
    cards.set(run.id, node);
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
  });
  $("live-empty").hidden = live.length > 0;
  const queued = live.filter((r) => r.status === "queued").length;
  const running = live.filter((r) => r.status === "running").length;
  $("queue-info").textContent = running || queued ? `${running} running · ${queued} queued` : "";
}

function redrawHistory() {
  const done = runs().filter((r) => FINAL.has(r.status));
  const shown = historyAll ? done : done.slice(0, HISTORY_PAGE);
  const body = $("history-body");
  body.replaceChildren(...shown.map((r) => {
    const isNew = !firstDraw && !seenFinal.has(r.id);
    return renderRow(r, isNew);
  }));
  for (const r of done) seenFinal.add(r.id);
  $("history-empty").hidden = done.length > 0;
  $("history-more").hidden = historyAll || done.length <= HISTORY_PAGE;
  $("history-more").textContent = `Show all ${done.length}`;
}

function redraw() {
  const now = Date.now();
  for (const r of store.runs.values()) {
    if (FINAL.has(r.status) && !finishedAt.has(r.id)) {
      // Finished before this page looked: not "recent". Finished while watching: keep its card a while.
      finishedAt.set(r.id, firstDraw || !cards.has(r.id) ? 0 : now);
    }
  }
  redrawLive();
  redrawHistory();
  if (store.loaded) firstDraw = false;
}

const redrawSoon = f.throttleFrame(redraw);
const liveSoon = f.throttleFrame(redrawLive);

function main() {
  init();
  if (form) {
    form.addEventListener("submit", submitRun);
    form.elements.client.addEventListener("change", () => { describeClient(); updateHint(); });
    for (const name of FIELDS) {
      form.elements[name].addEventListener("change", () => { markInvalid(null); probeSoon(); updateHint(); });
    }
    form.querySelectorAll("[data-preset]").forEach((b) => b.addEventListener("click", () => applyPreset(b.dataset.preset)));
    describeClient();
    onRoleChange(() => { probeSoon(); redraw(); });
    probeSoon();
  }
  $("live-list").addEventListener("click", async (e) => {
    const id = e.target.closest("[data-cancel]")?.dataset.cancel;
    if (!id) return;
    try { await api.cancelRun(id); } catch (err) { showMessage(err.message, "error", 6000); }
  });
  $("history-more").addEventListener("click", () => { historyAll = true; redraw(); });
  onKey((e) => {
    if (!isPresenter()) return false;
    if (e.key === "a") { applyPreset("A"); return true; }
    if (e.key === "b") { applyPreset("B"); return true; }
    if (e.key === "0") { applyPreset("baseline"); return true; }
    return false;
  });
  // progress and clock ticks touch only the live cards; the history changes with states
  subscribe((kind) => {
    if (kind === "progress" || kind === "tick") liveSoon();
    else redrawSoon();
    if (kind === "sync" || kind === "done") updateHint();
  });
  setInterval(redrawSoon, 1000); // retire recent cards
  start();
}

main();

// A run that fails while the page is open is announced, not only marked in red.
subscribe((kind, id) => {
  if (kind !== "done" || !id) return;
  const run = store.runs.get(id);
  if (run && failed(run)) showMessage(`Run ${run.client} (${f.serverSummary(run.server)}) failed: ${run.error || "not verified"}`, "error", 10000);
});
