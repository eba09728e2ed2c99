// One run: its disk map replayed from the per-request trace (real or faster speed), its
// requests per second, counts, the time breakdown, verification and a log excerpt.

import { api } from "./api.js";
import { init, onKey, onThemeChange, showMessage } from "./common.js";
import { DiskMap, cellSizeFor, drawRate, legend, showMap } from "./diskmap.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { FINAL, start, store, subscribe, upsertRun } from "./live.js";
import { contendedNote, failed, fastZeroText, predictedLabel, slowPath, statusLabel } from "./runview.js";

const el = f.el;
const runId = decodeURIComponent(location.pathname.split("/").pop());
const map = new DiskMap({ rows: 8, height: 160, label: "Disk map of this run" });
const EXCERPT = 200;
let trace = null;
let replay = null; // {t0: performance.now() at start, speed, next}

function dd(label, value, key = null) {
  return [el("dt", {}, label), el("dd", { dataset: key ? { stat: key } : {} }, value)];
}

function renderRun(run) {
  $("run-id").textContent = run.id;
  $("run-sub").textContent = `${run.client} · ${f.serverSummary(run.server)} · ${f.geometry(run.server)}`
    + (run.label ? ` · ${run.label}` : "");
  const st = $("run-status");
  st.className = `status status-${run.status}`;
  st.textContent = statusLabel(run);
  const b = run.backend || {};
  const reached = run.reached;
  $("run-counts").replaceChildren(...[
    dd("copy time", f.seconds(run.duration_s) + (run.contended || slowPath(run) ? " ⚠" : ""), "time"),
    dd(predictedLabel(run), f.seconds(run.predicted_s), "predicted"),
    dd("backend writes", b.write_ops ?? "–", "writes"),
    dd("backend zeroes", b.zero_ops ?? "–", "zeroes"),
    dd("wire writes / zeroes", run.wire ? `${run.wire.write} / ${run.wire.zero}` : "–", "wire"),
    dd("fast zero sent/refused", fastZeroText(run.wire), "fast"),
    dd("verified", run.verified === true ? "yes" : run.verified === false ? "NO" : "–", "verified"),
    reached && run.status !== "succeeded" ? dd("reached", `${Math.round((reached.fraction || 0) * 100)}%`, "reached") : [],
  ].flat());
  // a time that is not a clean measurement says so beside it (others' CPU, or the slow copy path)
  $("run-contended").replaceChildren(...(FINAL.has(run.status) ? contendedNote(run) : []));
  $("run-error").hidden = !(run.error && (failed(run) || run.status === "cancelled"));
  $("run-error").textContent = run.error || "";
  const times = [["setup (image, server)", run.setup_s], ["copy", run.duration_s], ["verify (read back)", run.verify_s]];
  // the copy's expected time, part by part, where this machine has been calibrated (lab calibrate)
  const b2 = run.breakdown || {};
  const parts = [["delays (the floor)", b2.delays_s], ["per request", b2.per_request_s], ["per byte", b2.per_byte_s], ["fixed", b2.fixed_s]]
    .filter(([, v]) => typeof v === "number");
  const total = times.reduce((s, [, v]) => s + (v || 0), 0);
  $("run-times").replaceChildren(...times.flatMap(([k, v]) => dd(k, v === null || v === undefined ? "–"
    : `${f.seconds(v)}${total ? ` (${Math.round((v / total) * 100)}%)` : ""}`)),
    ...(parts.length && run.expected_s ? [...dd("copy expected", f.interval(run.expected_s, run.expected_low_s, run.expected_high_s)
        + (run.expected_coverage ? ` · ${Math.round(run.expected_coverage * 100)}% of runs` : "") + (run.regime ? ` · ${run.regime}` : ""), "expected"),
      ...(run.model_verdict ? dd("against the model", run.model_verdict === "within" ? "within its interval" : f.outsideText(run), "verdict") : []),
      ...(run.machine_factor != null ? dd("machine now", `×${run.machine_factor.toFixed(2)} its calibrated speed (a control just before; the expectation is scaled by it)`, "machine") : []),
      ...(run.calibration_stale ? dd("calibration", "stale: its control drifted beyond what the intervals allow for (lab calibrate)", "stale") : []),
      ...parts.flatMap(([k, v]) => dd(`· ${k}`, f.seconds(v)))] : []));
  $("run-model").textContent = run.predicted_s ? (run.model === "serial-upper-bound"
    ? `The model (writes × delay-write + zeroes × delay-zero) is an upper bound for a client with many requests in flight: measured ${f.seconds(run.duration_s)} of at most ${f.seconds(run.predicted_s)}.`
    : `The model (writes × delay-write + zeroes × delay-zero) is the floor for one request in flight: measured/predicted = ${run.ratio ?? "–"}.`) : "";
  $("run-verify").textContent = run.verified === true ? `The destination matches the source: ${run.verify_detail || "every chunk"}.`
    : run.verified === false ? `The destination does NOT match the source: ${run.verify_detail || ""}` : "Not verified (the run did not get that far).";
  $("run-notes").replaceChildren(...(run.notes || []).map((n) => el("li", {}, n)));
  $("run-latency").replaceChildren(...latencyTable(run.request_stats));
  $("trace-csv").href = `/api/v1/runs/${encodeURIComponent(run.id)}/trace?format=csv`;
  $("trace-ndjson").href = `/api/v1/runs/${encodeURIComponent(run.id)}/trace`;
}

// Per-operation latency as the log filter timed each request, and the zero requests' sizes (run.request_stats).
function latencyTable(stats) {
  const rows = Object.entries((stats && stats.latency) || {}).filter(([, p]) => p);
  if (!rows.length) return [];
  const head = el("tr", {}, ...["request", "n", "p50", "p90", "p99", "max"].map((h) => el("th", { scope: "col" }, h)));
  const body = rows.map(([op, p]) => el("tr", {}, el("th", { scope: "row" }, op), el("td", {}, String(p.n)),
    ...[p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms].map((v) => el("td", {}, `${v.toFixed(2)} ms`))));
  const sizes = ((stats && stats.zero_sizes) || []).map((b) => `≤${f.size(b.le)}: ${b.count}`).join(", ");
  return [el("h3", { class: "sub-h" }, "Latency per request"), el("table", { class: "runs-table" },
    el("thead", {}, head), el("tbody", {}, ...body)),
    ...(sizes ? [el("p", { class: "hint" }, `Zero request sizes: ${sizes}`)] : [])];
}

// --- the map: live while the run goes, from the trace once it is done --------------------
function showLive() {
  const live = store.cells.get(runId);
  if (live) showMap(map, live);
  const series = store.series.get(runId);
  if (series && series.length > 1) drawRate($("run-rate"), series, { height: 90, label: "backend requests per second" });
}

function seriesOf(rows, upto = Infinity) {
  const out = [{ t: 0, w: 0, z: 0 }];
  let w = 0;
  let z = 0;
  for (const r of rows) {
    const t = r.t1 ?? r.t0;
    if (t > upto) break;
    if (r.op === "Write") w += 1;
    else if (r.op === "Zero") z += 1;
    else continue;
    out.push({ t, w, z });
  }
  return out;
}

function endOf(rows) {
  return rows.reduce((m, r) => Math.max(m, r.t1 ?? r.t0), 0);
}

function showEnd() {
  stopReplay();
  const run = store.runs.get(runId);
  map.reset(run.server.size);
  for (const r of trace) map.apply(r);
  map.flashes = [];
  map.commit();
  drawRate($("run-rate"), seriesOf(trace), { height: 90, span: endOf(trace) });
  $("replay-clock").textContent = `${trace.length} requests over ${f.seconds(endOf(trace))}`;
}

function stopReplay() {
  if (replay) cancelAnimationFrame(replay.frame);
  replay = null;
  $("replay-play").textContent = "Replay";
}

function startReplay() {
  if (!trace) return;
  if (replay) { stopReplay(); return; }
  const run = store.runs.get(runId);
  map.reset(run.server.size);
  const speed = Number($("replay-speed").value) || 1;
  const end = endOf(trace);
  replay = { t0: performance.now(), speed, next: 0, frame: 0 };
  $("replay-play").textContent = "Pause";
  const step = () => {
    const t = ((performance.now() - replay.t0) / 1000) * replay.speed;
    let changed = false;
    while (replay.next < trace.length && trace[replay.next].t0 <= t) { map.apply(trace[replay.next]); replay.next += 1; changed = true; }
    if (changed || map.flashes.length) map.commit();
    drawRate($("run-rate"), seriesOf(trace, t), { height: 90, span: end });
    $("replay-clock").textContent = `${f.seconds(Math.min(t, end), 1)} of ${f.seconds(end)} · ${replay.next} of ${trace.length} requests · ${speed}×`;
    if (replay.next >= trace.length && t >= end) { stopReplay(); map.commit(); return; }
    replay.frame = requestAnimationFrame(step);
  };
  replay.frame = requestAnimationFrame(step);
}

function renderTrace(rows) {
  const body = $("trace-body");
  const shown = rows.slice(0, EXCERPT);
  body.replaceChildren(...shown.map((r) => el("tr", { dataset: { kind: r.kind } },
    el("td", { class: "num", "data-label": "#" }, r.seq),
    el("td", { class: "num", "data-label": "start" }, `${r.t0.toFixed(3)} s`),
    el("td", { class: "num", "data-label": "took" }, r.t1 === null || r.t1 === undefined ? "–" : `${((r.t1 - r.t0) * 1000).toFixed(1)} ms`),
    el("td", { "data-label": "request", class: "mono" }, r.op + (r.source === "client" ? " (client)" : "")),
    el("td", { "data-label": "kind" }, el("span", { class: "swatch", style: `background: var(--map-${cssKind(r.kind)})` }), r.kind),
    el("td", { class: "num mono", "data-label": "offset" }, f.size(r.offset)),
    el("td", { class: "num mono", "data-label": "length" }, f.size(r.count)),
    el("td", { "data-label": "flags", class: "mono" }, r.flags || ""),
    el("td", { "data-label": "result", class: r.result === "ok" ? "" : "bad" }, r.result))));
  $("trace-more").textContent = rows.length > EXCERPT ? `First ${EXCERPT} of ${rows.length} requests; the whole trace is in the downloads.` : `${rows.length} requests.`;
}

function cssKind(kind) {
  return { data: "data", "zero-write": "zero-write", "prezero-write": "prezero-write", zero: "zero", prezero: "prezero",
    refused: "refused", trim: "trim", status: "status" }[kind] || "empty";
}

async function loadTrace(run) {
  try {
    trace = (await api.trace(run.id)).sort((a, b) => a.seq - b.seq);
    renderTrace(trace);
    showEnd();
    $("map-sub").textContent = `${map.cells.length} cells of ${f.size(map.cellSize)}; each request paints the cells it covers, in the order they started.`;
  } catch (err) {
    $("trace-more").textContent = err.message;
    if (run.diskmap) showMap(map, run.diskmap);
  }
}

async function main() {
  init();
  $("run-map").append(map.node);
  $("map-legend").append(legend(["D", "W", "P", "Z", "p", "T", "R", "S", "."]));
  $("replay-play").addEventListener("click", startReplay);
  $("replay-end").addEventListener("click", () => trace && showEnd());
  onKey((e) => {
    if (e.key === " ") { startReplay(); return true; }
    if (e.key === "e" && trace) { showEnd(); return true; }
    return false;
  });
  onThemeChange(() => { map.draw(); if (trace && !replay) showEnd(); });
  new ResizeObserver(() => map.draw()).observe($("run-map"));
  let run;
  try {
    run = await api.run(runId);
  } catch (err) {
    $("run-id").textContent = runId;
    showMessage(err.status === 404 ? `There is no run ${runId}.` : err.message, "error");
    return;
  }
  upsertRun(run);
  renderRun(run);
  if (!run.server || !run.server.size) return;
  map.reset(run.server.size || cellSizeFor(1));
  if (FINAL.has(run.status)) loadTrace(run);
  subscribe((kind, id) => {
    if (id !== runId) return;
    const now = store.runs.get(runId);
    if (kind === "progress") showLive();
    else if (now) {
      renderRun(now);
      if (kind === "done" || (FINAL.has(now.status) && !trace)) loadTrace(now);
    }
  });
  start({ history: false });
}

main();
