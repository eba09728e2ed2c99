// The talk: one act per screen, its runs racing on one time axis, then the outcome and why.
//
// For a stage: Enter runs this act (never "press the focused button") and does nothing while it
// runs; anything that starts more than one act asks first, in a dialog Enter alone cannot pass;
// Space is left to the browser. ?kiosk (or k) drops the top bar. ?follow is the audience's view:
// read-only, it follows the act the presenter shows (with or without a token).

import { api, isPresenter, request } from "./api.js";
import { init, onKey, onRoleChange, onThemeChange, showMessage, typing } from "./common.js";
import { KINDS } from "./diskmap.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { connection, onConnection, start, store, subscribe, watchScenario } from "./live.js";
import { rowSpec, runsByKey } from "./chart.js";
import { ago, asksFirst, axisScale, buildLane, drawAxis, laneOf, laneTitle, updateLane } from "./talklane.js";
import { renderSummary } from "./talksummary.js";

const el = f.el;
const params = new URLSearchParams(location.search);
const follow = params.has("follow");
let acts = [];
let index = 0;
const RESET_KEY = "lab-talk-since";
let since = loadSince();
let starting = false; // a press of Enter is between its POSTs and their answers
const cancelling = new Set(); // run ids whose cancel was asked for

function loadSince() {
  try { return JSON.parse(sessionStorage.getItem(RESET_KEY)) || {}; } catch { return {}; }
}
function saveSince() {
  try { sessionStorage.setItem(RESET_KEY, JSON.stringify(since)); } catch { /* ignore */ }
}

// The audience's view (?follow, or no presenter token) never starts anything and follows the presenter.
const presenter = () => isPresenter() && !follow;
const following = () => !presenter();
const isSummary = () => index === acts.length;
const act = () => acts[index] || null;
// An act's own number, as its title gives it ("2b. What's the status?" -> "2b").
export const actNumber = (a, i) => ((a.title || "").match(/^(\w+)\./) || [null, String(i + 1)])[1];

// #3 (position) or #pre-zero (an act's key) or #summary
function indexFromHash() {
  const h = decodeURIComponent(location.hash.slice(1));
  if (h === "summary") return acts.length;
  const byKey = acts.findIndex((a) => a.key === h);
  if (byKey >= 0) return byKey;
  const n = parseInt(h, 10);
  return Number.isFinite(n) ? Math.max(0, Math.min(acts.length, n - 1)) : null;
}

// Rows this machine cannot run (GET /api/v1/scenarios/acts says `available: false` and why) are no
// lanes: the act runs the others, and a note under the lanes names what is missing and why.
function splitAvailable(a) {
  return { ...a, rows: a.rows.filter((r) => r.available !== false), unavailable: a.rows.filter((r) => r.available === false) };
}

function renderUnavailable(a) {
  const box = $("lanes-unavailable");
  const missing = (a && a.unavailable) || [];
  box.hidden = !missing.length;
  const byReason = new Map();
  for (const r of missing) byReason.set(r.reason || "", [...(byReason.get(r.reason || "") || []), r]);
  box.replaceChildren(...[...byReason].map(([reason, rows]) => el("p", {},
    el("b", {}, `${rows.map((r) => laneTitle(r)).join(", ")}: `), `not available here${reason ? `: ${reason}` : ""}.`)));
}

// --- one act on screen ------------------------------------------------------------------------
let doms = new Map(); // row key -> lane DOM
let shownAct = -1;

function ctxFor(a) {
  return { act: a, acts, byRow: runsByKey(), since: since[a.key] || 0, cancelling };
}

function lanesOf(a) {
  const ctx = ctxFor(a);
  return a.rows.map((r) => laneOf(r, ctx));
}

// The maps' height in pixels (the canvas draws in pixels): 1.6rem of two rows, 0.8rem in the grid.
function mapHeight(rem) {
  return Math.round(parseFloat(getComputedStyle(document.documentElement).fontSize) * rem);
}

function buildAct(a) {
  const grid = a.rows.length > 2; // the block-status act: two columns (the storages), a row per size
  const box = $("lanes");
  box.className = grid ? "lanes lanes-grid" : "lanes";
  $("talk").classList.toggle("is-grid", grid);
  // a row per size: as many as the longer column (a column this machine lacks is a note, not lanes)
  const perColumn = Math.max(a.rows.filter((r) => r.group === "A").length, a.rows.filter((r) => r.group !== "A").length);
  box.style.setProperty("--lane-rows", String(perColumn));
  // the grid is filled column by column: all of A (tmpfs), then all of B (ext4)
  const rows = grid ? [...a.rows.filter((r) => r.group === "A"), ...a.rows.filter((r) => r.group !== "A")] : a.rows;
  doms = new Map(rows.map((r) => [r.key, buildLane(r, { mapRows: grid ? 1 : 2, short: grid })]));
  const nodes = [...doms.values()].map((d) => d.node);
  if (grid) { // each column headed by its storage
    // "tmpfs, reused disk, 32 MiB (256 holes)" -> "tmpfs" (where the machine keeps this column's disks)
    const head = (r) => el("div", { class: "lanes-head" }, r.label.split(",")[0]);
    const split = rows.findIndex((r) => r.group !== "A");
    if (split > 0) nodes.splice(split, 0, head(rows[split])); // (a column this machine lacks has no lanes)
    nodes.unshift(head(rows[0]));
  }
  box.replaceChildren(...nodes);
  const phone = !matchMedia("(min-aspect-ratio: 4/3) and (min-width: 900px)").matches;
  const h = mapHeight(grid ? 0.8 : phone ? 1.1 : 1.6);
  for (const d of doms.values()) { d.refs.map.height = h; d.refs.map.canvas.style.height = `${h}px`; }
  $("axes").replaceChildren(...(grid ? [el("div", { class: "axis" }), el("div", { class: "axis" })] : [el("div", { class: "axis" })]));
  renderUnavailable(a);
  const kinds = asksFirst(a) ? ["D", "Z", "S"] : mapKinds(a);
  $("lane-legend").replaceChildren(...kinds.map((k) => el("span", { class: "item" },
    el("span", { class: "swatch", style: `background: var(${KINDS[k][1]})` }), LEGEND[k])));
}

// The map's colours in the talk's few words (diskmap.js KINDS has the long ones).
const LEGEND = { D: "data", W: "zero written out", P: "pre-zero written out", Z: "zero as metadata",
  p: "pre-zero as metadata", R: "fast zero refused", S: "BLOCK_STATUS asked", T: "trim", ".": "not written" };

// The map colours an act can show: its story's, not all of them.
function mapKinds(a) {
  const codes = { "baseline": ["D", "W"], "write-zeroes": ["D", "Z", "W"], "pre-zero": ["D", "p", "P"],
    "no-fallback": ["D", "Z", "W"], "fast-zero": ["D", "p", "W", "R"] }[a.key];
  return codes || ["D", "W", "P", "Z", "p", "R"];
}

function renderAct() {
  const a = act();
  const talk = $("talk");
  talk.classList.remove("is-summary");
  $("talk-chart").hidden = true;
  set($("act-count"), `Act ${actNumber(a, index)} · ${index + 1} of ${acts.length}`);
  set($("act-era"), a.era);
  set($("act-title"), a.title.replace(/^\w+\.\s*/, ""));
  set($("act-summary"), a.summary);
  if (shownAct !== index) { buildAct(a); shownAct = index; }
  const lanes = lanesOf(a);
  const scale = axisScale(lanes);
  const connected = connection().state === "live";
  for (const lane of lanes) updateLane(doms.get(lane.row.key), lane, { act: a, scale: scale.end, connected });
  for (const axis of $("axes").children) drawAxis(axis, scale);
  renderOutcome(a, lanes);
  // the controls
  const busy = starting || lanes.some((l) => ["running", "queued", "cancelling"].includes(l.state));
  const btn = $("act-run");
  btn.disabled = busy || !presenter() || !lanes.length; // no lanes: nothing of this act runs on this machine
  const label = !lanes.length ? "Not available here " : busy ? "Running…" : lanes.some((l) => l.state !== "ready") ? "Run again " : lanes.length > 2
    ? `Run all ${lanes.length} ` : lanes.length > 1 ? "Run both " : "Run ";
  if (btn.dataset.label !== label) { btn.dataset.label = label; btn.replaceChildren(label, busy || !lanes.length ? "" : el("kbd", {}, "Enter")); }
  $("act-cancel").hidden = !busy || starting;
  $("act-reset").hidden = false;
}

// --- the outcome: the same box from the start; its words follow the lanes, honestly ------------
function renderOutcome(a, lanes) {
  const box = $("outcome");
  const states = lanes.map((l) => l.state);
  let state = "idle";
  if (states.some((s) => ["running", "queued", "cancelling"].includes(s))) state = "running";
  else if (states.some((s) => s === "failed" || s === "interrupted")) state = "failed";
  else if (states.some((s) => s === "cancelled")) state = "cancelled";
  else if (states.length && states.every((s) => s === "done")) state = "done";
  else if (states.some((s) => s === "done")) state = "partial";
  const parts = outcomeParts(a, lanes, state);
  const key = `${state}|${parts.map((p) => p.textContent).join("|")}`;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.dataset.state = state;
  box.replaceChildren(...parts);
}

const H = (text) => el("h2", { class: "outcome-h" }, text);

function outcomeParts(a, lanes, state) {
  switch (state) {
    case "idle":
      return [H("Before it runs"),
        el("p", { class: "why" }, presenter() ? `Press Enter to run ${lanes.length > 1 ? "the lanes side by side" : "it"}.`
          : "Waiting for the presenter to run this act."),
        a.no_reference ? el("p", { class: "hint" }, a.no_reference) : null].filter(Boolean);
    case "running": {
      const queued = lanes.filter((l) => l.state === "queued");
      return [H("Running"),
        el("p", { class: "why" }, asksFirst(a) ? "Each lane asks BLOCK_STATUS before every hole; the violet part of a bar is the time spent asking."
          : "The bars grow in real seconds on one axis; ◆ marks the 2019 time."),
        queued.length ? el("p", { class: "hint" }, `Waiting in the queue: ${queued.map((l) => laneTitle(l.row)).join(", ")}.`) : null,
      ].filter(Boolean);
    }
    case "failed": {
      const bad = lanes.filter((l) => l.state === "failed" || l.state === "interrupted");
      return [H("This act failed"),
        el("ul", {}, bad.map((l) => el("li", {}, el("b", {}, `${laneTitle(l.row)}: `),
          l.state === "interrupted" ? "interrupted: the service stopped during the run" : l.run.verified === false
            ? "the copy is NOT what the source held" : l.run.error || l.run.status,
          l.last ? el("span", { class: "earlier" }, ` (last run, ${ago(l.last.created_at)}: ${f.seconds(l.last.duration_s)})`) : null))),
        el("p", { class: "hint" }, presenter() ? "Press Enter to run it again, or r to reset." : "The presenter may run it again.")];
    }
    case "cancelled":
      return [H("Cancelled"),
        el("p", { class: "why" }, "The act was stopped before the end: no result to compare."),
        el("p", { class: "hint" }, presenter() ? "Press Enter to run it again." : "The presenter may run it again.")];
    case "partial":
      return [H("Partly run"), el("p", { class: "why" }, "Not every lane has a result since the last reset."),
        el("p", { class: "hint" }, presenter() ? "Press Enter to run the act." : "")];
    default:
      return [H("Outcome"), el("p", { class: "verdict" }, verdict(a, lanes)),
        a.takeaway ? el("p", { class: "why" }, el("b", {}, "Why: "), a.takeaway) : null].filter(Boolean);
  }
}

function verdict(a, lanes) {
  if (asksFirst(a)) {
    // per storage: how much the time spent asking grew, against how much the disk grew
    const by = new Map();
    const where = (l) => l.row.label.split(",")[0]; // "tmpfs", "ext4", "tmpfs already mounted", ...
    for (const l of lanes) by.set(where(l), [...(by.get(where(l)) || []), l]);
    const growth = [...by].map(([name, ls]) => {
      const first = ls[0].part;
      const last = ls[ls.length - 1].part;
      return first && last != null ? `${(last / first).toFixed(last / first < 10 ? 1 : 0)}× on ${name}` : null;
    }).filter(Boolean);
    const [small, big] = [lanes[0], lanes[lanes.length - 1]].map((l) => rowSpec(l.row).size);
    return `Asking grew ${growth.join(", ")}, for ${Math.round(big / small)}× the disk.`;
  }
  const text = lanes.map((l) => `${laneTitle(l.row).split(" (")[0]}: ${f.seconds(l.value)}`).join(", ");
  if (lanes.length === 2) {
    const [A, B] = lanes;
    const ratio = B.value / A.value;
    let out = `${text}. ${ratio > 1.15 ? `A was ${ratio.toFixed(1)}× faster.` : ratio < 1 / 1.15
      ? `B was ${(1 / ratio).toFixed(1)}× faster.` : "About the same time."}`;
    const b = B.beside;
    if (b) out += ` B took ${f.seconds(b.s)} in ${b.label}: ${f.seconds(b.s - B.value)} saved.`;
    return out;
  }
  const run = lanes[0].run;
  return `${text}.${run && run.predicted_s ? ` The delays alone come to ${f.seconds(run.predicted_s)}.` : ""}`;
}

// --- the act list -----------------------------------------------------------------------------
let dotsKey = "";
function renderDots() {
  const all = [...acts, { key: "summary", title: "Σ. Summary", rows: [] }];
  const done = all.map((a) => a.rows.length > 0 && lanesOf(a).every((l) => l.state === "done"));
  const key = `${index}|${done.join(",")}|${acts.length}`;
  if (key === dotsKey) return; // the buttons stay the same elements (a press in progress lands)
  dotsKey = key;
  const dots = $("act-dots");
  if (dots.children.length !== all.length) {
    dots.replaceChildren(...all.map((a, i) => el("li", {}, el("button", {
      type: "button", "aria-label": i < acts.length ? a.title : "Summary", title: a.title, onclick: () => go(i, true),
    }, i < acts.length ? actNumber(a, i) : "Σ"))));
  }
  [...dots.querySelectorAll("button")].forEach((b, i) => {
    if (i === index) b.setAttribute("aria-current", "step"); else b.removeAttribute("aria-current");
    b.classList.toggle("done", done[i]);
  });
}

function set(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function render() {
  if (!acts.length) return;
  renderDots();
  $("act-prev").disabled = index === 0;
  $("act-next").disabled = index === acts.length;
  if (isSummary()) {
    shownAct = index;
    $("talk").classList.add("is-summary");
    set($("act-count"), "Summary");
    set($("act-era"), "2016-2019, measured here");
    set($("act-title"), "Who wins, act by act");
    renderUnavailable(null);
    const chart = $("talk-chart");
    chart.hidden = false;
    renderSummary(chart, acts, (a) => lanesOf(a), actNumber);
    set($("act-run"), "Run all acts…");
    $("act-run").disabled = !presenter();
    $("act-reset").hidden = true;
    $("act-cancel").hidden = true;
    return;
  }
  renderAct();
}

const renderSoon = f.throttleFrame(render);

// `mine`: the presenter moved (a key, a press), so the audience is told.
function go(i, mine = false) {
  index = Math.max(0, Math.min(acts.length, i));
  history.replaceState(null, "", `${location.search}#${index === acts.length ? "summary" : acts[index].key}`);
  render();
  if (mine) announce();
}

// --- running, cancelling -----------------------------------------------------------------------
function busyLanes() {
  return act() ? lanesOf(act()).filter((l) => ["running", "queued", "cancelling"].includes(l.state)) : [];
}

async function runAct() {
  if (!presenter() || starting) return;
  if (isSummary()) { confirmMany("acts"); return; }
  if (busyLanes().length || !act().rows.length) return;
  const a = act();
  starting = true;
  render();
  try {
    const started = await Promise.all(a.rows.map((r) => api.startRun({ client: r.client, server: r.server, label: r.key })));
    for (const run of started) if (run && run.id && !store.runs.has(run.id)) store.runs.set(run.id, run);
  } catch (err) {
    showMessage(err.message, "error", 8000);
  } finally {
    starting = false;
    render();
  }
}

async function cancelAct() {
  if (!presenter()) return;
  const ids = busyLanes().map((l) => l.run.id);
  for (const id of ids) cancelling.add(id);
  render();
  await Promise.all(ids.map((id) => api.cancelRun(id).catch((err) => {
    if (err.status !== 409) showMessage(err.message, "error", 6000); // 409: it had just finished
  })));
  render();
}

async function restartAct() {
  await cancelAct();
  resetAct();
  await runAct();
}

function resetAct() {
  const a = act();
  if (!a || !presenter()) return;
  // Hide every run this act has so far; compare server timestamps only with each other.
  let latest = 0;
  const byRow = runsByKey();
  for (const r of a.rows) for (const run of byRow.get(r.key) || []) latest = Math.max(latest, run.created_at || 0);
  since[a.key] = latest + 1e-3;
  saveSince();
  render();
}

// More than one act's runs: a dialog whose focus starts on "Not now", so Enter alone never confirms.
const MANY = {
  acts: () => `All ${acts.length} acts, ${acts.reduce((n, a) => n + a.rows.length, 0)} runs, one after another. The acts you run next wait behind them.`,
  "case-study": () => "The whole case study: every row of the 2019 table and every client on A and B. It fills the queue for several minutes, and the acts wait behind it.",
};
let pending = null;
function confirmMany(name) {
  if (!presenter()) return;
  pending = name;
  $("confirm-text").textContent = MANY[name]();
  $("confirm-dialog").showModal();
  $("confirm-no").focus();
}

async function confirmed() {
  const name = pending;
  pending = null;
  $("confirm-dialog").close();
  if (!name) return;
  try {
    await api.startScenario(name);
    showMessage(name === "case-study" ? "The whole case study is queued: the Case study page fills in as it runs." : "All acts queued.", "ok", 6000);
  } catch (err) {
    showMessage(err.message, "error", 8000);
  }
}

// --- the audience follows the presenter ---------------------------------------------------------
// The presenter's page says which act it shows (PUT /api/v1/talk); every follower hears it on the
// event stream ("talk" events) and reads it once when it opens.
function announce() {
  if (!isPresenter() || follow) return;
  const key = isSummary() ? "summary" : act().key;
  request("PUT", "/api/v1/talk", { act: key }).catch(() => {}); // an audience without a presenter loses nothing
}

function followTo(key) {
  if (!following() || !key) return;
  const at = key === "summary" ? acts.length : acts.findIndex((a) => a.key === key);
  if (at >= 0 && (at !== index || location.hash !== `#${key}`)) go(at);
}

// The stage is sized from the height the top bar leaves (talk.css reads --topbar-h). The bar's height
// follows the root size it helps to set, so it is only ever raised (a bar that wraps at one size and
// not at the next cannot make them take turns); a new window size measures afresh.
let topbarH = 0;
function measureTopbar(fresh = false) {
  const bar = document.querySelector(".topbar");
  const h = bar ? Math.ceil(bar.getBoundingClientRect().height) : 0;
  if (!fresh && h <= topbarH) return;
  topbarH = h;
  document.documentElement.style.setProperty("--topbar-h", `${h}px`);
}

function setKiosk(on) {
  document.body.classList.toggle("kiosk", on);
  if (on) params.set("kiosk", ""); else params.delete("kiosk");
  const q = params.toString().replace(/=(&|$)/g, "$1");
  history.replaceState(null, "", `${q ? `?${q}` : location.pathname}${location.hash}`);
  shownAct = -1; // the map's height follows the new root size
  renderSoon();
}

function keys() {
  // Enter runs the act wherever the focus is (a focused arrow or dot included): taken in the
  // capture phase, before the focused button could act on it. Space is the browser's.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e) || document.querySelector("dialog[open]")) return;
    e.preventDefault();
    e.stopPropagation();
    if (!e.repeat) runAct();
  }, true);
  $("confirm-dialog").addEventListener("keydown", (e) => {
    if (e.key === "y" && !e.repeat) { e.preventDefault(); confirmed(); }
  });
  onKey((e) => {
    switch (e.key) {
      // a presenter's clicker sends PageDown / PageUp: the stage fits the screen, nothing to scroll
      case "ArrowRight": case "PageDown": go(index + 1, true); return true;
      case "ArrowLeft": case "PageUp": go(index - 1, true); return true;
      case "Home": go(0, true); return true;
      case "End": go(acts.length, true); return true;
      case "r": resetAct(); return true;
      case "x": cancelAct(); return true;
      case "R": restartAct(); return true;
      case "k": setKiosk(!document.body.classList.contains("kiosk")); return true;
      case "c": confirmMany("case-study"); return true;
      case "f":
        if (document.fullscreenElement) document.exitFullscreen();
        else document.documentElement.requestFullscreen?.().catch(() => {});
        return true;
      default: return false;
    }
  });
}

async function main() {
  init();
  const showRole = () => {
    document.body.classList.toggle("follow", following());
    $("follow-pill").hidden = !following();
  };
  showRole();
  onRoleChange(showRole);
  if (params.has("kiosk")) document.body.classList.add("kiosk");
  $("act-prev").addEventListener("click", () => go(index - 1, true));
  $("act-next").addEventListener("click", () => go(index + 1, true));
  $("act-run").addEventListener("click", runAct);
  $("act-reset").addEventListener("click", resetAct);
  $("act-cancel").addEventListener("click", cancelAct);
  $("confirm-yes").addEventListener("click", confirmed);
  $("confirm-no").addEventListener("click", () => { pending = null; $("confirm-dialog").close(); });
  keys();
  window.addEventListener("hashchange", () => {
    const at = indexFromHash();
    if (at !== null && at !== index) go(at, true);
  });
  onThemeChange(() => { for (const d of doms.values()) d.refs.map.draw(); renderSoon(); });
  onRoleChange(renderSoon);
  onConnection(renderSoon);
  window.addEventListener("resize", () => { measureTopbar(true); shownAct = -1; renderSoon(); });
  const bar = document.querySelector(".topbar");
  if (bar) new ResizeObserver(() => { measureTopbar(); shownAct = -1; renderSoon(); }).observe(bar);
  // the page measured the bar before its first paint (base.html): start from there, only ever raise it
  topbarH = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--topbar-h")) || 0;
  measureTopbar();
  subscribe(renderSoon);
  subscribe((kind, id) => {
    if (kind === "talk") followTo(store.talk && store.talk.act);
    // a run of an act started elsewhere (a script, another presenter tab) brings that act up too
    if (kind === "new" && following() && store.loaded) {
      const run = store.runs.get(id);
      const at = run && !run.sweep_id && ["queued", "running"].includes(run.status)
        ? acts.findIndex((a) => a.rows.some((r) => r.key === run.label && r.key in (run.scenario_rows || {}))) : -1;
      if (at >= 0 && at !== index) go(at);
    }
    if (kind !== "done" || !act()) return;
    cancelling.delete(id);
    // a run of this act that fails is announced (a banner over the page, not in its flow)
    const run = store.runs.get(id);
    const row = run && act().rows.find((r) => r.key in (run.scenario_rows || {}));
    if (row && ["failed", "interrupted"].includes(run.status)) {
      showMessage(`${laneTitle(row)}: ${run.error || run.status}`, "error", 10000);
    }
  });
  // The page may be opened before the lab is up (a projector set up early): read the acts until it answers.
  for (let tries = 0, read = false; !read; tries++) {
    try {
      const scenario = await request("GET", "/api/v1/scenarios/acts");
      acts = (scenario.acts || []).map(splitAvailable);
      read = true;
    } catch (err) {
      if (tries === 0) showMessage(`Cannot read the acts yet: ${err.message} Trying again…`, "error");
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  watchScenario("acts", 3); // only the runs the acts need
  index = indexFromHash() ?? 0;
  render();
  // The boxes and controls show once drawn with what the lab knows (its runs set the lanes and the
  // outcome's words; a follower's act is the presenter's), or after 3 s without it (talk.css).
  const reveal = () => $("talk").classList.add("is-ready");
  const fallback = setTimeout(reveal, 3000);
  await start({ history: false });
  if (following()) {
    try { followTo((await request("GET", "/api/v1/talk")).act); } catch { /* no presenter yet */ }
  } else if (location.hash) announce();
  render();
  clearTimeout(fallback);
  requestAnimationFrame(reveal); // after the frame that lays them out
}

main();
