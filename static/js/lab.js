// The lab page: a run form with the server's advertised flags, live runs, history.
//
// Everything here holds still under a person's pointer: live cards are updated in place,
// the flags box keeps its height while a probe runs, history rows are added one by one.

import { ApiError, api, canRun, config, isPresenter } from "./api.js";
import { init, onKey, onRoleChange, showMessage } from "./common.js";
import { DELAY_FIELDS, FIELDS, TYPED, formServer } from "./fields.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { FINAL, loadMore, runs, start, store, subscribe, upsertRun } from "./live.js";
import { failed, renderCard, renderRow } from "./runview.js";

const el = f.el;
const form = $("run-form");
// The server fields, their kinds and presets are the server's (lab.domain.spec.ServerSpec, in the page's config,
// see fields.js); this page parses no unit and checks nothing itself: POST /api/v1/validate does.
const RECENT_MS = 20000; // a finished run stays among the live cards this long

// --- the form -----------------------------------------------------------------------
const PRESETS = Object.fromEntries(Object.entries(config.presets).map(([k, p]) => [k, p.fields]));

function formValues() {
  return { client: form.elements.client.value, server: formServer(form) };
}

// One message per field, under the field, in plain words (from the lab's own validator).
function fieldError(name) {
  let p = $(`err-${name}`);
  if (!p) {
    const input = form.elements[name];
    p = el("p", { class: "field-error", id: `err-${name}`, "aria-live": "polite" });
    input.closest(".field").append(p);
    input.setAttribute("aria-describedby", p.id);
  }
  return p;
}

function showFieldErrors(errors) {
  for (const name of FIELDS.filter((n) => form.elements[n])) {
    const msg = errors[name] || "";
    const input = form.elements[name];
    if (msg) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    // a wrong field folded under "More server fields" is shown, not left to be guessed
    const fold = msg && input.closest("details");
    if (fold && !fold.open) fold.open = true;
    if (msg || $(`err-${name}`)) {
      const p = fieldError(name);
      if (p.textContent !== msg) p.textContent = msg;
      p.hidden = !msg;
    }
  }
}

function showFormError(text) {
  const p = $("form-error");
  p.textContent = text || "";
  p.hidden = !text;
}

function describeClient() {
  const c = config.clients.find((x) => x.id === form.elements.client.value);
  $("client-desc").textContent = c ? c.description || "" : "";
  $("client-desc").title = c ? c.description || "" : "";
}

function markPreset() {
  const v = formValues().server;
  for (const b of form.querySelectorAll("[data-preset]")) {
    const p = PRESETS[b.dataset.preset];
    const on = Object.entries(p).every(([k, val]) => v[k] === val);
    b.setAttribute("aria-pressed", on ? "true" : "false");
  }
}

function applyPreset(name) {
  const p = PRESETS[name];
  if (!p) return;
  for (const [k, v] of Object.entries(p)) form.elements[k].value = v;
  fieldsChanged(true);
}

// --- checking as you type: the service's validator, debounced -------------------------
let checkSeq = 0;
let checkTimer = null;
let checked = { ok: true, errors: {}, general: [], server: null, key: "" };

function checkSoon(delay = 250) {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(check, delay);
}

async function check() {
  const v = formValues();
  const key = JSON.stringify(v.server);
  if (checked.key === key) return checked;
  if (!canRun()) return checked;
  const seq = ++checkSeq;
  try {
    const res = await api.checkFields(v.server);
    if (seq !== checkSeq) return checked;
    checked = { ...res, key };
    showFieldErrors(res.errors);
    showFormError(res.general.join(" "));
    updateHint();
    probeSoon();
  } catch (err) {
    if (seq === checkSeq && !(err instanceof ApiError && err.status === 401)) showFormError(err.message);
  }
  return checked;
}

function fieldsChanged(now = false) {
  markPreset();
  showFormError(null);
  checkSoon(now ? 0 : 250);
}

// --- advertised flags: a short-lived server, probed and deleted ---------------------
// The box keeps its place and size: while a probe runs, the last flags stay, dimmed.
const flagCache = new Map();
let probeTimer = null;
let probeSeq = 0;

// The probe server is the run's server (its filters and what sits under them) without the delays:
// they shape no flag. Its fields, as JSON, key the cache.
function flagServer(s) {
  const fields = Object.fromEntries(Object.entries(s).filter(([, v]) => v !== null && v !== undefined));
  for (const k of DELAY_FIELDS) fields[k] = 0;
  return fields;
}

function renderFlags(flags, note = null) {
  const list = $("flags");
  const box = list.closest(".flags");
  box.classList.toggle("is-probing", !flags && !note);
  if (!flags) {
    if (note || !list.querySelector(".flag-yes, .flag-no")) {
      list.replaceChildren(el("li", { class: "flag flag-unknown" }, note || "probing…"));
    }
    return;
  }
  // The four flags the story turns on; the probe reports more (fua, multi_conn, ...).
  const items = ["can_zero", "can_fast_zero", "can_trim", "can_flush"]
    .filter((k) => typeof flags[k] === "boolean")
    .map((k) => el("li", { class: `flag ${flags[k] ? "flag-yes" : "flag-no"}`, title: flags[k] ? "advertised" : "not advertised" },
      `${flags[k] ? "✓" : "✗"} ${k}`));
  list.replaceChildren(...items);
}

function probeSoon() {
  clearTimeout(probeTimer);
  if (!isPresenter()) { renderFlags(null, "shown to the presenter"); return; }
  if (!checked.ok || !checked.server) return; // a field is wrong: its message says so
  const fields = flagServer(checked.server);
  const key = JSON.stringify(fields);
  if (flagCache.has(key)) { renderFlags(flagCache.get(key)); return; }
  renderFlags(null);
  probeTimer = setTimeout(() => probe(fields, key), 300);
}

async function probe(fields, key) {
  const seq = ++probeSeq;
  try {
    const server = await api.createServer(fields);
    if (server && server.id) api.deleteServer(server.id).catch(() => {});
    flagCache.set(key, server.flags || {});
    if (seq === probeSeq) renderFlags(server.flags || {});
  } catch (err) {
    if (seq === probeSeq) renderFlags(null, `cannot probe: ${err.message}`);
  }
}

// What this setup should cost, from runs already measured with the same (normalised) settings.
function updateHint() {
  const hint = $("run-hint");
  const s = checked.server;
  const client = form.elements.client.value;
  if (!s) { hint.textContent = "Starts a fresh server with these settings."; return; }
  // the same settings: every server field equal, normalised (kind, storage and the rest included)
  const same = runs().filter((r) => r.status === "succeeded" && r.client === client && r.server &&
    FIELDS.every((k) => (r.server[k] ?? null) === (s[k] ?? null)));
  hint.textContent = same.length
    ? `Measured before with these settings: ${f.seconds(same[0].duration_s)} (${f.plural(same.length, "run")})`
    : "Starts a fresh server with these settings.";
}

// The card of the run just started comes into view (one column: it is below the form; two: the
// page may have scrolled down to the Run button), once it is drawn.
function showStarted(id) {
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const card = document.querySelector(`#live-list .run-card[data-run-id="${CSS.escape(id)}"]`);
    if (!card) return;
    const r = card.getBoundingClientRect();
    if (r.top < 0 || r.bottom > innerHeight) card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }));
}

async function submitRun(e) {
  if (e) e.preventDefault();
  const btn = $("run-btn");
  if (btn.disabled) return;
  btn.disabled = true;
  try {
    clearTimeout(checkTimer);
    const result = await check();
    if (!result.ok) {
      const first = FIELDS.find((n) => result.errors && result.errors[n]);
      if (first) form.elements[first].focus();
      return;
    }
    const body = formValues();
    const run = await api.startRun(body);
    if (run && run.id) {
      if (!store.runs.has(run.id)) upsertRun(run);
      dirty.add(run.id);
      redrawSoon();
      showStarted(run.id);
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 422 && err.field && FIELDS.includes(err.field)) {
      showFieldErrors({ [err.field]: err.fieldMessage || err.message });
      form.elements[err.field].focus();
    } else if (err instanceof ApiError && err.status === 422) showFormError(err.message);
    else showMessage(err.message, "error");
  } finally {
    btn.disabled = false;
  }
}

// --- live cards ---------------------------------------------------------------------
const cards = new Map();
const finishedAt = new Map(); // id -> when this page saw it finish (ms)
let firstDraw = true;

function liveRuns(now) {
  for (const r of store.runs.values()) {
    // Finished since the last look: a card on screen stays a while (a history row replaces it later).
    if (FINAL.has(r.status) && !finishedAt.has(r.id)) finishedAt.set(r.id, !firstDraw && cards.has(r.id) ? now : 0);
  }
  return [...store.runs.values()]
    .filter((r) => !FINAL.has(r.status) || (finishedAt.has(r.id) && now - finishedAt.get(r.id) < RECENT_MS))
    .sort((a, b) => (a.created_at || 0) - (b.created_at || 0)); // oldest first: the queue reads top to bottom
}

function redrawLive() {
  const live = liveRuns(Date.now());
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
  const text = running || queued ? `${running} running · ${queued} queued` : "";
  if ($("queue-info").textContent !== text) $("queue-info").textContent = text;
}

// --- history: one row per finished run, added or replaced one at a time ------------------
const rows = new Map(); // id -> tr
let order = []; // ids of the rows shown, newest first

function newer(a, b) {
  return (b.created_at || 0) - (a.created_at || 0) || (a.id < b.id ? -1 : 1);
}

function placeRow(run, isNew) {
  const body = $("history-body");
  const old = rows.get(run.id);
  const tr = renderRow(run, isNew);
  if (old) { old.replaceWith(tr); rows.set(run.id, tr); return; }
  // binary search for its place among the shown rows (newest first)
  let lo = 0;
  let hi = order.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (newer(store.runs.get(order[mid]) || {}, run) < 0) lo = mid + 1; else hi = mid;
  }
  body.insertBefore(tr, rows.get(order[lo]) || null);
  order.splice(lo, 0, run.id);
  rows.set(run.id, tr);
}

function dropRow(id) {
  const tr = rows.get(id);
  if (!tr) return;
  tr.remove();
  rows.delete(id);
  order = order.filter((x) => x !== id);
}

function historyFooter() {
  const shown = order.length;
  $("history-empty").hidden = shown > 0;
  const more = $("history-more");
  const total = store.total;
  const left = total === null ? 0 : Math.max(0, total - store.runs.size);
  more.hidden = !(left > 0 && store.nextCursor);
  more.textContent = `Show ${Math.min(left, 100)} more (${shown} of ${total} shown)`;
}

function rebuildHistory() {
  const done = [...store.runs.values()].filter((r) => FINAL.has(r.status)).sort(newer);
  for (const id of [...rows.keys()]) if (!store.runs.has(id) || !FINAL.has(store.runs.get(id).status)) dropRow(id);
  const body = $("history-body");
  const frag = document.createDocumentFragment();
  rows.clear();
  order = done.map((r) => r.id);
  for (const r of done) {
    const tr = renderRow(r, false);
    rows.set(r.id, tr);
    frag.append(tr);
  }
  body.replaceChildren(frag);
  historyFooter();
}

// --- what to redraw: only the runs that changed --------------------------------------------
const dirty = new Set();
let full = true;

function redraw() {
  const now = Date.now();
  if (full) {
    for (const r of store.runs.values()) {
      if (FINAL.has(r.status) && !finishedAt.has(r.id)) finishedAt.set(r.id, 0); // finished before we looked
    }
    rebuildHistory();
    full = false;
    dirty.clear();
  }
  for (const id of dirty) {
    const run = store.runs.get(id);
    if (!run) { dropRow(id); continue; }
    if (FINAL.has(run.status)) {
      // Finished while watching: keep its card a while.
      if (!finishedAt.has(id)) finishedAt.set(id, firstDraw || !cards.has(id) ? 0 : now);
      placeRow(run, !firstDraw && !rows.has(id));
    }
  }
  if (dirty.size) historyFooter();
  dirty.clear();
  redrawLive();
  if (store.loaded) firstDraw = false;
}

const redrawSoon = f.throttleFrame(redraw);
const liveSoon = f.throttleFrame(redrawLive);

function main() {
  init();
  if (form) {
    form.addEventListener("submit", submitRun);
    form.elements.client.addEventListener("change", () => { describeClient(); updateHint(); });
    for (const name of FIELDS.filter((n) => form.elements[n])) {
      const input = form.elements[name];
      input.addEventListener(TYPED.includes(name) ? "input" : "change", () => fieldsChanged());
      if (TYPED.includes(name)) input.addEventListener("change", () => fieldsChanged(true));
    }
    form.querySelectorAll("[data-preset]").forEach((b) => b.addEventListener("click", () => applyPreset(b.dataset.preset)));
    describeClient();
    markPreset();
    onRoleChange(() => { checked.key = ""; checkSoon(0); full = true; redrawSoon(); });
    checkSoon(0);
  }
  $("live-list").addEventListener("click", async (e) => {
    const btn = e.target.closest("[data-cancel]");
    if (!btn || btn.disabled) return;
    btn.disabled = true;
    btn.querySelector(".cancel-text").textContent = " Cancelling…";
    try { await api.cancelRun(btn.dataset.cancel); } catch (err) { showMessage(err.message, "error", 6000); btn.disabled = false; }
  });
  $("history-more").addEventListener("click", async () => {
    const btn = $("history-more");
    btn.disabled = true;
    try { await loadMore(); } catch (err) { showMessage(err.message, "error", 6000); } finally { btn.disabled = false; }
  });
  onKey((e) => {
    if (!canRun()) return false;
    if (e.key === "a") { applyPreset("A"); return true; }
    if (e.key === "b") { applyPreset("B"); return true; }
    if (e.key === "0") { applyPreset("baseline"); return true; }
    return false;
  });
  // progress and clock ticks touch only the live cards; states and pages touch their rows
  subscribe((kind, id) => {
    if (kind === "progress" || kind === "tick") { liveSoon(); return; }
    if (kind === "sync" || kind === "page") full = true;
    if (id) dirty.add(id);
    redrawSoon();
    if (kind === "sync" || kind === "done") updateHint();
  });
  setInterval(liveSoon, 1000); // retire recent cards
  start();
}

main();

// A run that fails while the page is open is announced, not only marked in red.
subscribe((kind, id) => {
  if (kind !== "done" || !id) return;
  const run = store.runs.get(id);
  if (run && failed(run)) showMessage(`Run ${run.client} (${f.serverSummary(run.server)}) failed: ${run.error || "not verified"}`, "error", 10000);
});
