// Guided mode for a talk: one act per screen, its runs racing side by side, then why.

import { api, isPresenter } from "./api.js";
import { barFor, buildModel, drawChart, rowSpec, runsByKey, runsForRow } from "./chart.js";
import { init, onKey, onRoleChange, onThemeChange, showMessage } from "./common.js";
import * as f from "./format.js";
import { start, store, subscribe } from "./live.js";

const $ = (id) => document.getElementById(id);
const el = f.el;
let acts = [];
let index = 0;
const RESET_KEY = "lab-talk-since";
let since = loadSince();

function loadSince() {
  try { return JSON.parse(sessionStorage.getItem(RESET_KEY)) || {}; } catch { return {}; }
}
function saveSince() {
  try { sessionStorage.setItem(RESET_KEY, JSON.stringify(since)); } catch { /* ignore */ }
}

const isSummary = () => index === acts.length;
const act = () => acts[index] || null;

function lanesScale(bars) {
  const values = bars.flatMap((b) => [b.value || 0, b.ref || 0]);
  return Math.max(1, ...values) * 1.12;
}

function laneName(row, g) {
  if (g === "A") return "Server A";
  if (g === "B") return "Server B";
  return row.server && row.server.zeromode === "none" ? "No write-zeroes" : "Server";
}

function countsText(bar) {
  const run = bar.run;
  if (!run) return "";
  const progress = store.progress.get(run.id);
  const b = bar.state === "running" ? progress && progress.backend : run.backend;
  if (!b) return bar.state === "running" ? "starting…" : "";
  const parts = [f.plural(b.write_ops ?? 0, "write"), f.plural(b.zero_ops ?? 0, "zero", "zeroes")];
  const wire = bar.state === "running" ? progress && ((progress.client && progress.client.wire) || progress.server_wire) : run.wire;
  if (wire && (wire.fast_zero || wire.fast_zero_failed)) {
    parts.push(`${wire.fast_zero} fast zero${wire.fast_zero_failed ? `, ${wire.fast_zero_failed} refused` : ""}`);
  }
  return parts.join(" · ");
}

function renderLane(bar, scale) {
  const g = bar.group || f.group(rowSpec(bar.row));
  const lane = el("div", { class: `lane grp-${g} is-${bar.state}${bar.state === "failed" ? " is-failed" : ""}`, dataset: { row: bar.row.key, state: bar.state } });
  const spec = rowSpec(bar.row);
  const fill = el("div", { class: "lane-fill" });
  fill.style.width = `${bar.value ? Math.min(100, (bar.value / scale) * 100) : 0}%`;
  if (bar.stale) fill.style.opacity = "0.4";
  const track = el("div", { class: "lane-track" }, fill);
  if (bar.ref) {
    const ref = el("span", { class: "lane-ref", "data-label": `2019: ${f.seconds(bar.ref)}`, title: "2019 reference time" });
    const at = bar.ref / scale;
    ref.style.left = `${at * 100}%`;
    if (at > 0.8) ref.classList.add("ref-end"); // keep its label inside the lane
    track.append(ref);
  }
  let status = "ready";
  if (bar.state === "running") status = "running…";
  else if (bar.state === "queued") status = "queued";
  else if (bar.state === "done") status = bar.run.verified ? "✓ verified" : "done";
  else if (bar.state === "failed") status = bar.run.verified === false ? "✗ NOT verified" : `✗ ${bar.run.status}`;
  const time = bar.value === null || bar.value === undefined ? "–" : f.seconds(bar.value, bar.state === "running" ? 1 : 2);
  lane.append(
    el("div", {}, el("div", { class: "lane-name" }, laneName(bar.row, g)),
      el("div", { class: "lane-spec" }, `${bar.row.client} · zeromode=${spec.zeromode} · fastzeromode=${spec.fastzeromode}`)),
    el("div", { class: "lane-mid" }, el("div", { class: "lane-counts" }, countsText(bar) || " "), track),
    el("div", { class: "lane-time" }, time, el("small", {}, status)),
  );
  if (bar.state === "failed" && bar.run.error) lane.append(el("p", { class: "lane-error" }, bar.run.error));
  return lane;
}

function outcome(bars) {
  const box = $("outcome");
  const finished = bars.every((b) => b.state === "done" || b.state === "failed") && bars.length > 0;
  if (!finished) { box.hidden = true; return; }
  const times = bars.map((b) => {
    const name = laneName(b.row, b.group || f.group(rowSpec(b.row)));
    return b.state === "failed" ? `${name} failed` : `${name} took ${f.seconds(b.value)}`;
  });
  let verdict = times.join(", ") + ".";
  const [a, b] = bars;
  if (bars.length === 2 && a.state === "done" && b.state === "done" && a.value && b.value) {
    const ratio = b.value / a.value;
    verdict += ratio > 1.15 ? ` Server A was ${ratio.toFixed(1)}× faster.` : ratio < 1 / 1.15
      ? ` Server B was ${(1 / ratio).toFixed(1)}× faster.` : " About the same time.";
  } else if (bars.length === 1 && a.state === "done" && a.run.predicted_s) {
    verdict += ` The delay model predicted ${f.seconds(a.run.predicted_s)}.`;
  }
  box.replaceChildren(
    el("h3", {}, "Outcome"),
    el("p", { class: "verdict" }, verdict),
    act().takeaway ? el("p", { class: "why" }, el("b", {}, "Why: "), act().takeaway) : null,
  );
  box.hidden = false;
}

function renderDots() {
  const dots = $("act-dots");
  const byKey = runsByKey();
  dots.replaceChildren(...[...acts, { key: "summary", title: "Summary" }].map((a, i) => {
    const doneAct = a.rows && a.rows.every((r) => {
      const b = barFor(r, byKey, since[a.key] || 0);
      return b.state === "done";
    });
    return el("li", {}, el("button", {
      type: "button", "aria-label": a.title, title: a.title, "aria-current": i === index ? "step" : null,
      class: doneAct ? "done" : null, onclick: () => go(i),
    }, i < acts.length ? String(i + 1) : "Σ"));
  }));
}

function render() {
  if (!acts.length) return;
  renderDots();
  $("act-prev").disabled = index === 0;
  $("act-next").disabled = index === acts.length;
  if (isSummary()) {
    $("act-count").textContent = "Summary";
    $("act-era").textContent = "all acts, measured here";
    $("act-title").textContent = "Who wins, act by act";
    $("act-summary").textContent = "Every act as measured in this room; ◆ marks the 2019 time.";
    $("lanes").replaceChildren();
    $("outcome").hidden = true;
    const chart = $("talk-chart");
    chart.hidden = false;
    const rows = acts.flatMap((a) => a.rows.map((r) => ({ ...r, _act: a })));
    // "2. Writing zeroes: same requests, two servers" -> "2. Writing zeroes"
    const short = (t) => t.split(":")[0];
    const m = buildModel(rows, { labelFor: (r) => ({ label: short(r._act.title), sub: r._act.era }) });
    chart.replaceChildren(drawChart(m, Math.max(300, chart.clientWidth || 900), { scale: window.innerWidth > 900 && window.innerHeight > 800 ? 1.1 : 1 }));
    $("act-run").textContent = "Run all acts";
    $("act-reset").hidden = true;
    return;
  }
  $("talk-chart").hidden = true;
  $("act-reset").hidden = false;
  const a = act();
  $("act-count").textContent = `Act ${index + 1} of ${acts.length}`;
  $("act-era").textContent = a.era;
  $("act-title").textContent = a.title.replace(/^\d+\.\s*/, "");
  $("act-summary").textContent = a.summary;
  const byKey = runsByKey();
  const bars = a.rows.map((r) => barFor(r, byKey, since[a.key] || 0));
  const scale = lanesScale(bars);
  $("lanes").replaceChildren(...bars.map((b) => renderLane(b, scale)));
  outcome(bars);
  const busy = bars.some((b) => b.state === "running" || b.state === "queued");
  $("act-run").disabled = busy;
  $("act-run").replaceChildren(busy ? "Running…" : bars.length > 1 ? "Run both servers " : "Run ", el("kbd", {}, "Enter"));
}

const renderSoon = f.throttleFrame(render);

function go(i) {
  index = Math.max(0, Math.min(acts.length, i));
  history.replaceState(null, "", `#${index + 1}`);
  render();
}

async function runAct() {
  if (!isPresenter()) return;
  if (isSummary()) { runScenario("acts"); return; }
  const a = act();
  try {
    const started = await Promise.all(a.rows.map((r) => api.startRun({ client: r.client, server: r.server, label: r.key })));
    for (const run of started) if (run && run.id && !store.runs.has(run.id)) store.runs.set(run.id, run);
    render();
  } catch (err) {
    showMessage(err.message, "error", 8000);
  }
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

async function main() {
  init();
  $("act-prev").addEventListener("click", () => go(index - 1));
  $("act-next").addEventListener("click", () => go(index + 1));
  $("act-run").addEventListener("click", runAct);
  $("act-reset").addEventListener("click", resetAct);
  onKey((e) => {
    switch (e.key) {
      case "ArrowRight": case "PageDown": go(index + 1); return true;
      case "ArrowLeft": case "PageUp": go(index - 1); return true;
      case "Home": go(0); return true;
      case "End": go(acts.length); return true;
      case "Enter": case " ":
        if (e.target.closest && e.target.closest("button, a, summary")) return false; // the focused control acts
        runAct();
        return true;
      case "r": resetAct(); return true;
      case "c": runScenario("case-study"); return true;
      case "f":
        if (document.fullscreenElement) document.exitFullscreen();
        else document.documentElement.requestFullscreen?.().catch(() => {});
        return true;
      default: return false;
    }
  });
  window.addEventListener("hashchange", () => {
    const n = parseInt(location.hash.slice(1), 10);
    if (Number.isFinite(n) && n - 1 !== index) go(n - 1);
  });
  onThemeChange(renderSoon);
  onRoleChange(renderSoon);
  window.addEventListener("resize", renderSoon);
  subscribe(renderSoon);
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
    acts = withActs ? withActs.acts : [];
  } catch (err) {
    showMessage(`Cannot read the acts: ${err.message}`, "error");
  }
  const fromHash = parseInt(location.hash.slice(1), 10);
  index = Number.isFinite(fromHash) ? Math.max(0, Math.min(acts.length, fromHash - 1)) : 0;
  await start();
  render();
}

main();
