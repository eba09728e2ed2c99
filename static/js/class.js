// The teacher's view (/class): students and their runs, the class's guesses per act.
import { request } from "./api.js";
import { init } from "./common.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { start, subscribe } from "./live.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text = null) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text != null) n.textContent = text;
  return n;
}

// A strip plot of the guessed copy times: one dot per guess (stacked when close), the measured
// time as a solid line, the model's as a dashed one.
export function distribution(guesses, measured, model) {
  const W = 560, H = 86, L = 36, R = 16, base = 58;
  const values = [...guesses, measured, model].filter((v) => v != null);
  const max = Math.max(1, ...values) * 1.1;
  const x = (v) => L + (v / max) * (W - L - R);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "dist", role: "img",
    "aria-label": `${guesses.length} guesses; measured ${measured == null ? "not yet" : f.seconds(measured)}` });
  plot.append(svg("line", { x1: L, x2: W - R, y1: base, y2: base, class: "axis" }));
  const step = max > 20 ? 5 : max > 8 ? 2 : 1;
  for (let t = 0; t <= max; t += step) {
    plot.append(svg("line", { x1: x(t), x2: x(t), y1: base, y2: base + 4, class: "axis" }));
    plot.append(svg("text", { x: x(t), y: base + 16, "text-anchor": "middle" }, `${t} s`));
  }
  const stacks = new Map();
  for (const v of guesses) {
    const bin = Math.round(x(v) / 8);
    const n = stacks.get(bin) || 0;
    stacks.set(bin, n + 1);
    plot.append(svg("circle", { cx: x(v), cy: base - 6 - n * 8, r: 3.6, class: "dot" }));
  }
  if (model != null) plot.append(svg("line", { x1: x(model), x2: x(model), y1: 4, y2: base, class: "model" }));
  if (measured != null) plot.append(svg("line", { x1: x(measured), x2: x(measured), y1: 4, y2: base, class: "measured" }));
  return plot;
}

async function refreshStudents() {
  // Both tables from reads made together, drawn together: never students without their runs.
  const [view, list] = await Promise.all([request("GET", "/api/v1/class"), request("GET", "/api/v1/runs?limit=50")]);
  const body = $("students-rows");
  body.replaceChildren();
  for (const s of view.students) {
    body.append(f.el("tr", { "data-student": s.student }, f.el("td", {}, s.student), f.el("td", {}, String(s.total)),
      f.el("td", {}, String(s.unfinished)), f.el("td", {}, String(s.by_status.succeeded || 0)),
      f.el("td", {}, f.clock(s.last_at))));
  }
  $("students-empty").hidden = view.students.length > 0;
  $("class-limit").textContent = view.max_queued_per_student
    ? `at most ${view.max_queued_per_student} runs waiting or running per student` : "no per-student limit";
  const runs = list.runs.filter((r) => r.student);
  const rbody = $("class-runs");
  rbody.replaceChildren();
  for (const r of runs.slice(0, 25)) {
    rbody.append(f.el("tr", { "data-run": r.id }, f.el("td", {}, f.clock(r.created_at)), f.el("td", {}, r.student),
      f.el("td", {}, r.client), f.el("td", {}, f.serverSummary(r.server)),
      f.el("td", { class: `status status-${r.status}` }, r.status),
      f.el("td", {}, r.duration_s == null ? "–" : f.seconds(r.duration_s))));
  }
}

async function refreshActs() {
  const { acts } = await request("GET", "/api/v1/class/acts");
  const box = $("acts");
  box.replaceChildren();
  for (const act of acts) {
    const sec = f.el("div", { class: "act-plot", "data-act": act.key }, f.el("h3", {}, act.title));
    for (const row of act.rows) {
      const n = row.guesses.duration_s.length;
      const m = row.measured;
      sec.append(f.el("div", { class: "hint", "data-row": row.key },
        `${row.group ? `Server ${row.group}` : row.key} · ${row.client}: ${n} ${n === 1 ? "guess" : "guesses"}` +
        (m ? ` · measured ${f.seconds(m.duration_s)}, model ${f.seconds(m.predicted_s)}` : " · not run yet")));
      if (n || m) sec.append(distribution(row.guesses.duration_s, m ? m.duration_s : null, m ? m.predicted_s : null));
    }
    box.append(sec);
  }
}

// Runs change over the live event stream; guesses have no events, so they are polled.
let pending = null;
function soon() {
  clearTimeout(pending);
  pending = setTimeout(() => Promise.all([refreshStudents(), refreshActs()]).catch(() => {}), 300);
}

async function poll() {
  try { await refreshActs(); } catch { /* the connection pill says the service is away */ }
  setTimeout(poll, 4000);
}

init();
subscribe(soon);
start();
refreshStudents().catch(() => {});
poll();
