// Guided mode for a talk: one act per screen, its runs racing side by side with a live
// disk map under each lane, then why.
//
// For a projector: Enter always means "run this act" (never "press the focused button"),
// and does nothing while the act runs; banners float over the page and never move the
// controls; ?kiosk (or k) drops the top bar and pins the controls to the bottom.

import { api, isPresenter } from "./api.js";
import { barFor, buildModel, drawChart, rowSpec, runsByKey, runsForRow } from "./chart.js";
import { init, onKey, onRoleChange, onThemeChange, showMessage, typing } from "./common.js";
import { DiskMap, cellSizeFor, legend, unrle } from "./diskmap.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { start, store, subscribe, watchScenario } from "./live.js";
import { reachedOf } from "./runview.js";

const el = f.el;
let acts = [];
let index = 0;
const RESET_KEY = "lab-talk-since";
let since = loadSince();
let starting = false; // a press of Enter is between its POSTs and their answers

function loadSince() {
  try { return JSON.parse(sessionStorage.getItem(RESET_KEY)) || {}; } catch { return {}; }
}
function saveSince() {
  try { sessionStorage.setItem(RESET_KEY, JSON.stringify(since)); } catch { /* ignore */ }
}

const isSummary = () => index === acts.length;
const act = () => acts[index] || null;
// An act's own number, as its title gives it ("3b. Ask the destination first?" -> "3b").
const actNumber = (a, i) => ((a.title || "").match(/^(\w+)\./) || [null, String(i + 1)])[1];

// #3 (position) or #pre-zero (an act's key) or #summary
function indexFromHash() {
  const h = decodeURIComponent(location.hash.slice(1));
  if (h === "summary") return acts.length;
  const byKey = acts.findIndex((a) => a.key === h);
  if (byKey >= 0) return byKey;
  const n = parseInt(h, 10);
  return Number.isFinite(n) ? Math.max(0, Math.min(acts.length, n - 1)) : null;
}

function lanesScale(bars) {
  const values = bars.flatMap((b) => [b.value || 0, b.ref || 0]);
  return Math.max(1, ...values) * 1.12;
}

function laneName(row, g) {
  if (g === "A") return "Server A";
  if (g === "B") return "Server B";
  return rowSpec(row).zeromode === "none" ? "No write-zeroes" : "Server";
}

// What tells a lane apart from its neighbours: rows that differ by storage and size (the
// block-status act) carry that in their label; the others differ by their zero modes.
function laneSpec(row) {
  const spec = rowSpec(row);
  if (row.server && row.server.storage) return row.label;
  return `${row.client} · zeromode=${spec.zeromode} · fastzeromode=${spec.fastzeromode}`;
}

// A lane's name in a sentence: "Server A" alone is ambiguous when an act has several A rows.
function laneTitle(bar) {
  const name = laneName(bar.row, bar.group || f.group(rowSpec(bar.row)));
  return bar.row.server && bar.row.server.storage ? `${name} (${bar.row.label.replace(/ \(.*\)$/, "")})` : name;
}

// The counts a lane shows: live, final, or how far a failed/cancelled run got.
function countsOf(bar) {
  const run = bar.run;
  if (!run) return null;
  if (bar.state === "running") {
    const p = store.progress.get(run.id);
    return p ? { b: p.backend, wire: (p.client && p.client.wire) || p.server_wire } : null;
  }
  const reached = reachedOf(run);
  return { b: run.backend || (reached && reached.backend), wire: run.wire };
}

function countsText(bar) {
  const c = countsOf(bar);
  if (!c || !c.b) return bar.state === "running" ? "starting…" : "";
  const parts = [f.plural(c.b.write_ops ?? 0, "write"), f.plural(c.b.zero_ops ?? 0, "zero", "zeroes")];
  const wire = c.wire;
  if (wire && (wire.fast_zero || wire.fast_zero_failed)) {
    parts.push(`${wire.fast_zero} fast zero${wire.fast_zero_failed ? `, ${wire.fast_zero_failed} refused` : ""}`);
  }
  if (wire && wire.block_status) parts.push(`${wire.block_status} block status`);
  return parts.join(" · ");
}

function phaseText(bar) {
  if (bar.state === "queued") return "queued";
  if (bar.state !== "running") return "";
  const phase = store.phase.get(bar.run.id);
  return { setup: "setting up", "pre-zero": "pre-zero pass", copy: "copying", verify: "verifying" }[phase] || "running";
}

// --- lanes: built once per act, then only their texts, widths and maps change -------------
const lanes = new Map(); // row key -> {node, refs}

function buildLane(row, many) {
  const refs = {};
  const mk = (name, tag, attrs, ...children) => (refs[name] = el(tag, attrs, ...children));
  const node = el("div", { class: "lane", dataset: { row: row.key } },
    el("div", { class: "lane-head" }, mk("name", "div", { class: "lane-name" }),
      el("div", { class: "lane-spec", title: `client ${row.client}` }, laneSpec(row))),
    el("div", { class: "lane-mid" },
      el("div", { class: "lane-line" }, mk("counts", "div", { class: "lane-counts" }), mk("phase", "span", { class: "lane-phase" })),
      mk("track", "div", { class: "lane-track" }, mk("fill", "div", { class: "lane-fill" }))),
    el("div", { class: "lane-time" }, mk("time", "span", {}), mk("status", "small", {})),
    mk("mapbox", "div", { class: "lane-map" }),
    mk("error", "p", { class: "lane-error", hidden: true }));
  refs.map = new DiskMap(many ? { rows: 2, height: 16, label: `Disk map, ${row.key}` }
    : { rows: 4, height: 34, label: `Disk map, ${row.key}` });
  refs.mapbox.append(refs.map.node);
  refs.ref = null;
  return { node, refs };
}

function set(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function updateLane(lane, bar, scale) {
  const { node, refs } = lane;
  const g = bar.group || f.group(rowSpec(bar.row));
  const cls = `lane grp-${g} is-${bar.state}${bar.state === "failed" ? " is-failed" : ""}`;
  if (node.className !== cls) node.className = cls;
  node.dataset.state = bar.state;
  node.dataset.phase = bar.state === "running" ? store.phase.get(bar.run.id) || "setup" : "";
  set(refs.name, laneName(bar.row, g));
  refs.fill.style.width = `${bar.value ? Math.min(100, (bar.value / scale) * 100) : 0}%`;
  refs.fill.style.opacity = bar.stale ? "0.4" : "";
  if (bar.ref) {
    if (!refs.ref) { refs.ref = el("span", { class: "lane-ref", title: "2019 reference time" }); refs.track.append(refs.ref); }
    refs.ref.dataset.label = `2019: ${f.seconds(bar.ref)}`;
    const at = bar.ref / scale;
    refs.ref.style.left = `${at * 100}%`;
    refs.ref.classList.toggle("ref-end", at > 0.8);
  } else if (refs.ref) { refs.ref.remove(); refs.ref = null; }
  set(refs.counts, countsText(bar) || " ");
  set(refs.phase, phaseText(bar));
  let status = "ready";
  if (bar.state === "running") status = "running…";
  else if (bar.state === "queued") status = "queued";
  else if (bar.state === "done") status = bar.run.verified ? "✓ verified" : "done";
  else if (bar.state === "failed") status = bar.run.verified === false ? "✗ NOT verified" : `✗ ${bar.run.status}`;
  set(refs.time, bar.value === null || bar.value === undefined ? "–" : f.seconds(bar.value, bar.state === "running" ? 1 : 2));
  set(refs.status, status);
  const error = bar.state === "failed" ? bar.run.error || "not verified" : "";
  set(refs.error, error);
  refs.error.hidden = !error;
  // the map: live cells while it runs, the run's own map once done, blank when reset
  const run = bar.run;
  const live = run && store.cells.get(run.id);
  // (the last live cells may still show BLOCK_STATUS questions: a finished run shows its own map)
  const m = run && bar.state !== "empty" ? (bar.state === "running" ? live || run.diskmap : run.diskmap || live) : null;
  if (m) {
    refs.map.setCells(unrle(m.cells), m.cell_size);
    // a refused fast zero changes nothing on disk: it flashes over the disk as it happens
    const refused = bar.state === "running" ? (countsOf(bar)?.wire?.fast_zero_failed || 0) : 0;
    if (refused > (refs.refused || 0)) refs.map.flash("R", 0, refs.map.cells.length);
    refs.refused = refused;
  } else {
    // nothing written yet: the whole disk, untouched
    const size = rowSpec(bar.row).size;
    if (typeof size === "number") { const cell = cellSizeFor(size); refs.map.setCells(".".repeat(Math.ceil(size / cell)), cell); }
  }
  refs.mapbox.classList.toggle("is-blank", !m);
}

// The previous good result of a failed act, clearly labelled as such.
function lastGood(row) {
  const list = runsForRow(row, runsByKey()).filter((r) => (r.created_at || 0) >= (since[act().key] || 0));
  return list.find((r) => r.status === "succeeded" && r.verified !== false) || null;
}

function outcome(bars) {
  const box = $("outcome");
  const finished = bars.length > 0 && bars.every((b) => b.state === "done" || b.state === "failed");
  if (!finished) { box.hidden = true; return; }
  const failedBars = bars.filter((b) => b.state === "failed");
  if (failedBars.length) {
    // A failed act shows what went wrong, never the success story.
    const items = failedBars.map((b) => {
      const name = laneTitle(b);
      const good = lastGood(b.row);
      return el("li", {}, el("b", {}, `${name}: `), b.run.error || `${b.run.status}`,
        good ? el("span", { class: "fallback" }, ` Last good result (earlier run, shown for comparison only): ${f.seconds(good.duration_s)}.`) : null);
    });
    box.className = "outcome is-failed";
    box.replaceChildren(el("h2", { class: "outcome-h" }, "This act failed"), el("ul", { class: "verdict-list" }, items),
      el("p", { class: "hint" }, "Press Enter to run it again, or r to reset."));
    box.hidden = false;
    return;
  }
  box.className = "outcome";
  const times = bars.map((b) => `${laneTitle(b)} took ${f.seconds(b.value)}`);
  let verdict = times.join(", ") + ".";
  const [a, b] = bars;
  if (bars.length === 2 && a.value && b.value) {
    const ratio = b.value / a.value;
    verdict += ratio > 1.15 ? ` Server A was ${ratio.toFixed(1)}× faster.` : ratio < 1 / 1.15
      ? ` Server B was ${(1 / ratio).toFixed(1)}× faster.` : " About the same time.";
  } else if (bars.length > 2) {
    // one line per server: its times as the disk grows, and how much they grew
    const groups = new Map();
    for (const bar of bars) {
      const name = laneName(bar.row, bar.group || f.group(rowSpec(bar.row)));
      groups.set(name, [...(groups.get(name) || []), bar.value]);
    }
    verdict = [...groups].map(([name, vs]) => `${name}: ${vs.map((v) => f.seconds(v)).join(" → ")}`
      + (vs.length > 1 && vs[0] ? ` (${(vs[vs.length - 1] / vs[0]).toFixed(1)}×)` : "")).join("; ") + ".";
  } else if (bars.length === 1 && a.run.predicted_s) {
    verdict += ` The delay model predicted ${f.seconds(a.run.predicted_s)}.`;
  }
  box.replaceChildren(
    el("h2", { class: "outcome-h" }, "Outcome"),
    el("p", { class: "verdict" }, verdict),
    act().takeaway ? el("p", { class: "why" }, el("b", {}, "Why: "), act().takeaway) : null,
  );
  box.hidden = false;
}

let dotsKey = "";
function renderDots() {
  const byKey = runsByKey();
  const done = [...acts, { key: "summary", title: "Summary" }].map((a) => Boolean(a.rows && a.rows.every((r) => barFor(r, byKey, since[a.key] || 0).state === "done")));
  const key = `${index}|${done.join(",")}|${acts.length}`;
  if (key === dotsKey) return; // the buttons stay the same elements (a press in progress lands)
  dotsKey = key;
  const dots = $("act-dots");
  const all = [...acts, { key: "summary", title: "Summary" }];
  if (dots.children.length !== all.length) {
    dots.replaceChildren(...all.map((a, i) => el("li", {}, el("button", {
      type: "button", "aria-label": i < acts.length ? a.title : "Σ Summary", title: a.title, onclick: () => go(i),
    }, i < acts.length ? actNumber(a, i) : "Σ"))));
  }
  [...dots.querySelectorAll("button")].forEach((b, i) => {
    if (i === index) b.setAttribute("aria-current", "step"); else b.removeAttribute("aria-current");
    b.classList.toggle("done", done[i]);
  });
}

// Rows this machine cannot run (GET /api/v1/scenarios says `available: false` and why) are no
// lanes: the act runs the others, and a note under the lanes names what is missing and why.
function splitAvailable(a) {
  return { ...a, rows: a.rows.filter((r) => r.available !== false), unavailable: a.rows.filter((r) => r.available === false) };
}

function renderUnavailable(a) {
  const box = $("lanes-unavailable");
  const missing = (a && a.unavailable) || [];
  box.hidden = !missing.length;
  if (!missing.length) { box.replaceChildren(); return; }
  const byReason = new Map();
  for (const r of missing) byReason.set(r.reason || "", [...(byReason.get(r.reason || "") || []), r]);
  box.replaceChildren(...[...byReason].map(([reason, rows]) => el("p", {},
    el("b", {}, `${rows.map((r) => laneTitle({ row: r, group: r.group })).join(", ")}: `),
    `not available here${reason ? `: ${reason}` : ""}.`)));
}

function busyBars() {
  if (!act()) return [];
  const byKey = runsByKey();
  return act().rows.map((r) => barFor(r, byKey, since[act().key] || 0)).filter((b) => b.state === "running" || b.state === "queued");
}

let shownAct = -1;
function render() {
  if (!acts.length) return;
  renderDots();
  $("act-prev").disabled = index === 0;
  $("act-next").disabled = index === acts.length;
  if (isSummary()) {
    set($("act-count"), "Summary");
    set($("act-era"), "all acts, measured here");
    set($("act-title"), "Who wins, act by act");
    set($("act-summary"), "Every act as measured in this room; ◆ marks the 2019 time.");
    if (shownAct !== index) { $("lanes").replaceChildren(); lanes.clear(); shownAct = index; $("talk").classList.remove("talk-many"); }
    $("lane-legend").hidden = true;
    renderUnavailable(null);
    $("outcome").hidden = true;
    const chart = $("talk-chart");
    chart.hidden = false;
    const rows = acts.flatMap((a) => a.rows.map((r) => ({ ...r, _act: a })));
    // "2. Writing zeroes: same requests, two servers" -> "2. Writing zeroes"
    const short = (t) => t.split(":")[0];
    const m = buildModel(rows, { labelFor: (r) => ({ label: short(r._act.title), sub: r._act.era }) });
    const width = Math.max(300, chart.clientWidth || 900);
    // On a projector every text of the chart is at least 20 px; a phone gets a smaller scale.
    chart.replaceChildren(drawChart(m, width, { scale: width >= 900 ? 1.62 : 1.1 }));
    set($("act-run"), "Run all acts");
    $("act-run").disabled = false;
    $("act-reset").hidden = true;
    $("act-cancel").hidden = true;
    return;
  }
  $("talk-chart").hidden = true;
  $("act-reset").hidden = false;
  $("lane-legend").hidden = false;
  const a = act();
  set($("act-count"), `Act ${actNumber(a, index)} · ${index + 1} of ${acts.length}`);
  set($("act-era"), a.era);
  set($("act-title"), a.title.replace(/^\d+\.\s*/, ""));
  set($("act-summary"), a.summary);
  if (shownAct !== index) {
    lanes.clear();
    // two lanes stand side by side (A beside B) on a wide screen; more than two become a
    // compact grid, one row per server (the sizes left to right)
    const many = a.rows.length > 2;
    const box = $("lanes");
    box.className = `lanes lanes-${Math.min(a.rows.length, 3)}`;
    $("talk").classList.toggle("talk-many", many);
    box.style.setProperty("--lane-cols", String(Math.ceil(a.rows.length / 2)));
    box.replaceChildren(...a.rows.map((r) => { const lane = buildLane(r, many); lanes.set(r.key, lane); return lane.node; }));
    // BLOCK_STATUS questions light up live where a row lets the client see extents
    const asks = a.rows.some((r) => r.server && r.server.noextents === false);
    $("lane-legend").replaceChildren(legend(asks ? ["D", "Z", "S", "."] : ["D", "W", "P", "Z", "p", "R", "."]));
    renderUnavailable(a);
    shownAct = index;
  }
  const byKey = runsByKey();
  const bars = a.rows.map((r) => barFor(r, byKey, since[a.key] || 0));
  const scale = lanesScale(bars);
  bars.forEach((b) => updateLane(lanes.get(b.row.key), b, scale));
  outcome(bars);
  const busy = starting || bars.some((b) => b.state === "running" || b.state === "queued");
  const btn = $("act-run");
  btn.disabled = busy;
  if (!bars.length) btn.disabled = true; // nothing of this act runs on this machine
  const label = !bars.length ? "Not available here " : busy ? "Running…" : bars.some((b) => b.state === "failed") ? "Run again " : bars.length > 2 ? `Run all ${bars.length} ` : bars.length > 1 ? "Run both servers " : "Run ";
  if (btn.dataset.label !== label) { btn.dataset.label = label; btn.replaceChildren(label, busy || !bars.length ? "" : el("kbd", {}, "Enter")); }
  $("act-cancel").hidden = !busy || starting;
}

const renderSoon = f.throttleFrame(render);

function go(i) {
  index = Math.max(0, Math.min(acts.length, i));
  history.replaceState(null, "", `${location.search}#${index === acts.length ? "summary" : acts[index].key}`);
  render();
}

// Enter, Space and the Run button all come here; a second press while the act runs does nothing.
async function runAct() {
  if (!isPresenter() || starting) return;
  if (isSummary()) { runScenario("acts"); return; }
  if (busyBars().length || !act().rows.length) return;
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
  const ids = busyBars().map((b) => b.run.id);
  await Promise.all(ids.map((id) => api.cancelRun(id).catch((err) => showMessage(err.message, "error", 6000))));
}

async function restartAct() {
  await cancelAct();
  resetAct();
  await runAct();
}

function resetAct() {
  const a = act();
  if (!a) return;
  // Hide every run this act has so far; compare server timestamps only with each other.
  const byKey = runsByKey();
  let latest = 0;
  for (const r of a.rows) for (const run of runsForRow(r, byKey)) latest = Math.max(latest, run.created_at || 0);
  since[a.key] = latest + 1e-3;
  saveSince();
  render();
}

async function runScenario(name) {
  if (!isPresenter()) return;
  try {
    await api.startScenario(name);
    showMessage(name === "case-study" ? "The whole case study is queued: watch it fill in on the Case study page." : "All acts queued.", "ok", 6000);
  } catch (err) {
    showMessage(err.message, "error", 8000);
  }
}

function setKiosk(on) {
  document.body.classList.toggle("kiosk", on);
  const params = new URLSearchParams(location.search);
  if (on) params.set("kiosk", ""); else params.delete("kiosk");
  const q = params.toString().replace(/=(&|$)/g, "$1");
  history.replaceState(null, "", `${q ? `?${q}` : location.pathname}${location.hash}`);
  renderSoon();
}

async function main() {
  init();
  $("act-prev").addEventListener("click", () => go(index - 1));
  $("act-next").addEventListener("click", () => go(index + 1));
  $("act-run").addEventListener("click", runAct);
  $("act-reset").addEventListener("click", resetAct);
  $("act-cancel").addEventListener("click", cancelAct);
  if (new URLSearchParams(location.search).has("kiosk")) document.body.classList.add("kiosk");
  // Enter and Space run the act wherever the focus is (a focused arrow or dot included):
  // taken in the capture phase, before the focused button could act on them.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e) || document.querySelector("dialog[open]")) return;
    e.preventDefault();
    e.stopPropagation();
    if (!e.repeat) runAct();
  }, true);
  onKey((e) => {
    switch (e.key) {
      case "ArrowRight": case "PageDown": go(index + 1); return true;
      case "ArrowLeft": case "PageUp": go(index - 1); return true;
      case "Home": go(0); return true;
      case "End": go(acts.length); return true;
      case "r": resetAct(); return true;
      case "x": cancelAct(); return true;
      case "R": restartAct(); return true;
      case "k": setKiosk(!document.body.classList.contains("kiosk")); return true;
      case "c": runScenario("case-study"); return true;
      case "f":
        if (document.fullscreenElement) document.exitFullscreen();
        else document.documentElement.requestFullscreen?.().catch(() => {});
        return true;
      default: return false;
    }
  });
  window.addEventListener("hashchange", () => {
    const at = indexFromHash();
    if (at !== null && at !== index) go(at);
  });
  onThemeChange(() => { for (const l of lanes.values()) l.refs.map.draw(); renderSoon(); });
  onRoleChange(renderSoon);
  window.addEventListener("resize", () => { for (const l of lanes.values()) l.refs.map.draw(); renderSoon(); });
  subscribe(renderSoon);
  // A run of this act that fails is announced (a banner over the page, not in its flow).
  subscribe((kind, id) => {
    if (kind !== "done" || !act()) return;
    const run = store.runs.get(id);
    if (run && act().rows.some((r) => r.key === run.label) && ["failed", "interrupted"].includes(run.status)) {
      showMessage(`${run.label}: ${run.error || run.status}`, "error", 10000);
    }
  });
  // The audience follows the presenter: a run of an act starting elsewhere brings that act up.
  subscribe((kind, id) => {
    if (kind !== "new" || isPresenter() || !store.loaded) return;
    const run = store.runs.get(id);
    if (!run || !run.label || !["queued", "running"].includes(run.status)) return;
    const at = acts.findIndex((a) => a.rows.some((r) => r.key === run.label));
    if (at >= 0 && at !== index && !(run.sweep_id)) go(at);
  });
  try {
    const scenarios = await api.scenarios();
    const withActs = scenarios.find((s) => s.acts && s.acts.length);
    acts = withActs ? withActs.acts.map(splitAvailable) : [];
    if (withActs) watchScenario(withActs.name, 3); // only the runs the acts need
  } catch (err) {
    showMessage(`Cannot read the acts: ${err.message}`, "error");
  }
  index = indexFromHash() ?? 0;
  await start({ history: false });
  render();
}

main();


