// The case-study page: the comparison chart filling in live, the rows, exports.

import { api, config, isPresenter } from "./api.js";
import { buildModel, drawChart, exportPng, exportSvg } from "./chart.js";
import { init, onKey, onRoleChange, onThemeChange, showMessage } from "./common.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { start, subscribe, watchScenario } from "./live.js";
import { fastZeroText, failed } from "./runview.js";

const el = f.el;
let scenarios = [];
let current = null;

// Same shape as the talk (1 MiB data / 1 MiB hole, write:zero delay 4:1), about 30x faster.
const QUICK = { size: "16M", delay_write: "4ms", delay_zero: "1ms" };

const TITLES = {
  "case-study": "Copy time per scenario: server A vs server B",
  reference: "The 2019 reference table, re-run",
  acts: "The talk, act by act",
};

function scenarioName() {
  return new URLSearchParams(location.search).get("scenario") || "case-study";
}

function model() {
  return current ? buildModel(current.rows) : { cats: [], max: 1 };
}

// At what geometry the shown bars were measured: each row's own (the service says so per run:
// scenario_rows[key] is true), or say which others.
function geometryText(m) {
  const bars = m.cats.flatMap((c) => c.bars).filter((b) => b.run && b.run.server);
  if (!bars.length) return "Not measured yet";
  const other = new Set(bars.filter((b) => !(b.run.scenario_rows || {})[b.row.key])
    .map((b) => f.shortGeometry(b.run.server, config.spec_defaults) || "another geometry"));
  const own = bars.length - bars.filter((b) => !(b.run.scenario_rows || {})[b.row.key]).length;
  const talk = "each row's own geometry (the talk's: 100 MiB sparse image into nbdkit memory, 20 ms per write, 5 ms per zero)";
  if (!other.size) return `Measured at ${talk}`;
  return `Measured at ${[...other].join("; ")}${own ? `, and ${own} at ${talk}` : ""}`;
}

// How much of the scenario has been measured, in words: the page's status line and the export's subtitle.
function countText(m) {
  const bars = m.cats.flatMap((c) => c.bars);
  const done = bars.filter((b) => b.state === "done" || b.state === "failed").length;
  const contended = bars.filter((b) => b.state === "done" && b.run && b.run.contended).length;
  return `${done} of ${bars.length} rows measured${contended ? `, ${contended} contended ⚠` : ""}`;
}

function redrawChart() {
  const box = $("chart");
  if (!current) return;
  const m = model();
  const width = Math.max(300, Math.floor(box.clientWidth));
  box.replaceChildren(drawChart(m, width));
  // a chart wider than the screen scrolls, and says so
  box.closest(".chart-scroll")?.classList.toggle("scrolls", box.scrollWidth > box.clientWidth + 1);
  // status line: how much of the scenario has been measured
  const bars = m.cats.flatMap((c) => c.bars);
  const running = bars.filter((b) => b.state === "running").length;
  const queued = bars.filter((b) => b.state === "queued").length;
  const bad = bars.filter((b) => b.state === "failed").length;
  const parts = [countText(m)];
  if (running) parts.push(`${running} running`);
  if (queued) parts.push(`${queued} queued`);
  if (bad) parts.push(`${bad} failed`);
  $("sweep-status").textContent = parts.join(" · ");
  $("chart-sub").textContent = `${geometryText(m)}. ◆ = the 2019 reference time.`;
  $("sweep-status").classList.toggle("error-text", bad > 0);
  redrawRows(m);
}

// Where nbdkit 1.32 cannot match the 2019 figures, say what to expect here and why.
function note(n) {
  const expect = [];
  if (n.write_ops !== undefined) expect.push(`${n.write_ops} writes, ${n.zero_ops ?? 0} zeroes`);
  if (n.predicted_s !== undefined) expect.push(`about ${f.seconds(n.predicted_s, 1)}`);
  if (n.fast_seen) expect.push(`log: ${n.fast_seen}`);
  return el("details", { class: "note" },
    el("summary", {}, differsText(n)),
    expect.length ? el("p", {}, el("b", {}, "Here: "), expect.join("; ")) : null,
    n.why ? el("p", {}, el("b", {}, "Why: "), n.why) : null);
}

function differsText(n) {
  if (n.write_ops !== undefined) return "† nbdkit 1.32 cannot reproduce this row";
  return n.build === "chain" ? "built as a two-process nbdkit chain" : "nbdkit 1.32 logs it differently";
}

function redrawRows(m) {
  const body = $("rows-body");
  const rows = [];
  for (const cat of m.cats) {
    for (const bar of cat.bars) {
      const run = bar.run;
      const ref = bar.row.reference;
      const g = bar.group || "N";
      const tr = el("tr", { class: run && failed(run) ? "is-failed" : null, dataset: { row: bar.row.key } },
        el("td", { "data-label": "Row", class: "wide" }, el("span", { class: `grp-tag ${g}` }, g === "N" ? "–" : g), bar.row.label,
          run && run.error && failed(run) ? el("span", { class: "err" }, run.error) : null,
          ref && ref.nbdkit_1_32 ? note(ref.nbdkit_1_32) : null),
        el("td", { "data-label": "Client", class: "nowrap" }, bar.row.client),
        el("td", { "data-label": "Server", class: "mono wide" }, f.serverSummary({ fastzeromode: "default", ...bar.row.server })),
        el("td", { "data-label": "Measured", class: "num" },
          bar.state === "running" ? `${f.seconds(bar.value, 1)}…` : bar.state === "queued" && !bar.value ? "queued" : f.seconds(bar.value),
          run && run.contended && bar.state !== "running"
            ? el("span", { class: "contended", title: "contended: other work kept the machine busy during this run" }, " ⚠") : null,
          run && bar.state === "done" && run.expected_s != null
            ? el("div", { class: "hint" }, `${f.interval(run.expected_s, run.expected_low_s, run.expected_high_s)} exp.`) : null,
          run && bar.state === "done" && f.outsideText(run)
            ? el("div", { class: `hint outside outside-${run.model_verdict === "slower-than-model" ? "slower" : "faster"}`, title: f.outsideText(run) },
              run.model_verdict === "slower-than-model" ? "▲ slower than model" : "▼ faster than model") : null),
        el("td", { "data-label": "Reference", class: "num" }, ref ? f.seconds(ref.time_s) : "–"),
        el("td", { "data-label": "Backend W / Z", class: "num" },
          run && run.backend && bar.state !== "running" ? `${run.backend.write_ops} / ${run.backend.zero_ops}` : "–"),
        el("td", { "data-label": "Ref W / Z", class: "num" }, ref ? `${ref.write_ops} / ${ref.zero_ops ?? 0}` : "–"),
        el("td", { "data-label": "Fast zero sent / refused", class: "num" },
          run && bar.state !== "running" ? fastZeroText(run.wire) : "–"),
        el("td", { "data-label": "Verified" }, run && run.verified === true ? el("span", { class: "ok" }, "✓")
          : run && run.verified === false ? el("span", { class: "bad" }, "✗") : "–"),
      );
      rows.push(tr);
    }
  }
  body.replaceChildren(...rows);
}

const redrawSoon = f.throttleFrame(redrawChart);

function exportChart(kind) {
  if (!current) return;
  const m = model();
  const svg = drawChart(m, 1280, { title: TITLES[current.name] || current.title, background: true, scale: 1.15,
    subtitle: `fastzero-lab, ${new Date().toISOString().slice(0, 10)}: ${countText(m)}. ${geometryText(m)}. ◆ the 2019 time (Eric Blake's cover letter, 2019).` });
  const name = `fastzero-${current.name}`;
  if (kind === "svg") exportSvg(svg, `${name}.svg`);
  else exportPng(svg, `${name}.png`).catch((e) => showMessage(e.message, "error", 5000));
}

async function runAll() {
  if (!current) return;
  const btn = $("run-case-study");
  btn.disabled = true;
  try {
    const quick = $("sweep-geometry").value === "quick";
    const sweep = await api.startScenario(current.name, quick ? { server: QUICK } : undefined);
    const n = sweep && (sweep.runs || sweep.run_ids || []).length;
    showMessage(`${current.title}: ${n ? f.plural(n, "run") : "runs"} queued. The chart fills in as they finish.`, "ok", 6000);
  } catch (err) {
    showMessage(err.message, "error");
  } finally {
    btn.disabled = false;
  }
}

function fillPicker() {
  const pick = $("scenario-pick");
  pick.replaceChildren(...scenarios.map((s) => el("option", { value: s.name, selected: s.name === current?.name }, s.title)));
}

async function main() {
  init();
  $("export-svg").addEventListener("click", () => exportChart("svg"));
  $("export-png").addEventListener("click", () => exportChart("png"));
  $("run-case-study").addEventListener("click", runAll);
  $("scenario-pick").addEventListener("change", (e) => {
    current = scenarios.find((s) => s.name === e.target.value) || current;
    watchScenario(current.name);
    history.replaceState(null, "", `?scenario=${encodeURIComponent(current.name)}`);
    $("run-case-study").textContent = current.name === "case-study" ? "Run the whole case study" : `Run “${current.title}”`;
    redrawChart();
  });
  onKey((e) => {
    if (e.key === "s") { exportChart("svg"); return true; }
    if (e.key === "p") { exportChart("png"); return true; }
    return false;
  });
  onThemeChange(redrawSoon);
  onRoleChange(redrawSoon);
  new ResizeObserver(redrawSoon).observe($("chart"));
  subscribe(redrawSoon);
  try {
    scenarios = await api.scenarios();
  } catch (err) {
    showMessage(`Cannot read the scenarios: ${err.message}`, "error");
  }
  current = scenarios.find((s) => s.name === scenarioName()) || scenarios[0] || null;
  fillPicker();
  if (current) watchScenario(current.name); // only the runs its rows need, not the whole history
  await start({ history: false });
  redrawChart();
}

main();
