// The teacher's view (/class), made for a projector: the join code, each act's guesses on one time
// axis per act (A and B lanes side by side on the same scale, each dot named, the measured time and
// the model's marked, a contended run said so), the closest guesses first, the students and who ran
// what. It redraws live while runs go on: at most every REDRAW_MS, however many events arrive
// (a stream of events never postpones the next redraw).
import { request } from "./api.js";
import { init, showMessage } from "./common.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { start, subscribe } from "./live.js";

const SVG = "http://www.w3.org/2000/svg";
const REDRAW_MS = 700;
const POLL_MS = 4000; // guesses have no events: they are read again this often

function svg(tag, attrs = {}, text = null) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text != null) n.textContent = text;
  return n;
}

// At most one call every `ms`: the first event draws at once, the ones during the wait share one
// trailing call. Unlike a debounce, a steady stream of events cannot keep postponing it.
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
  };
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => m * p).find((m) => m >= v) || v;
}

// One shared axis per act: wide enough for every measured and model time, and for the guesses up
// to three times those (a wild guess does not flatten the others: it sits at the edge, marked).
export function axisMax(rows) {
  const known = rows.flatMap((r) => [r.measured && r.measured.duration_s, r.measured && r.measured.predicted_s])
    .filter((v) => v != null && v > 0);
  const guesses = rows.flatMap((r) => r.points.map((p) => p.duration_s)).filter((v) => v != null && v >= 0)
    .sort((a, b) => a - b);
  let base = known.length ? Math.max(...known) : 0;
  if (!base && guesses.length) base = guesses[Math.floor(guesses.length / 2)] || 1;
  const top = guesses.length ? Math.min(guesses[guesses.length - 1], 3 * base) : 0;
  return niceMax(Math.max(1, base * 1.25, top * 1.05));
}

function laneName(row, rows) {
  const g = row.group || "";
  const same = rows.filter((r) => r.group === g).length > 1;
  const size = (row.label.match(/(\d+ MiB)/) || [])[1];
  return `${g ? `Server ${g}` : "Time"}${same && size ? `, ${size}` : ""}`;
}

// The act's guesses, one lane per row on one axis: a dot per guess with its name beside it (names
// never overlap: a name that would runs on the next line of the lane), the measured time (solid;
// orange and dashed when the run was contended) and the model's (dashed).
export function actPlot(rows) {
  const W = 760, L = 118, R = 16, LINE = 21, PAD = 7, CHAR = 8.2;
  const max = axisMax(rows);
  const x = (v) => L + (Math.min(v, max) / max) * (W - L - R);
  const lanes = rows.map((row) => {
    const pts = row.points.filter((p) => p.duration_s != null).sort((a, b) => a.duration_s - b.duration_s);
    // each label takes [from, to] on its line; a guess beyond the axis sits at its end, labelled leftwards
    const lines = [];
    const placed = pts.map((p) => {
      const px = x(p.duration_s);
      const beyond = p.duration_s > max;
      const text = beyond ? `${p.student} ${f.seconds(p.duration_s)} →` : p.student;
      const width = CHAR * text.length + 14;
      const [from, to] = beyond ? [px - width, px + 6] : [px - 6, px + width];
      let level = lines.findIndex((spans) => spans.every(([a, z]) => to < a || from > z));
      if (level < 0) { level = lines.length; lines.push([]); }
      lines[level].push([from, to]);
      return { ...p, px, level, beyond, text };
    });
    return { row, placed, height: PAD * 2 + Math.max(1, lines.length) * LINE };
  });
  const H = lanes.reduce((h, l) => h + l.height, 0) + 34;
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "dist", role: "img",
    "aria-label": rows.map((r) => `${laneName(r, rows)}: ${r.points.length} guesses, measured ` +
      `${r.measured ? f.seconds(r.measured.duration_s) : "not yet"}`).join("; ") });
  let top = 0;
  for (const { row, placed, height } of lanes) {
    plot.append(svg("rect", { x: 0, y: top, width: W, height, class: `lane-bg grp-${row.group || "N"}` }));
    plot.append(svg("text", { x: 6, y: top + height / 2 + 5, class: "lane-label" }, laneName(row, rows)));
    const m = row.measured;
    if (m && m.predicted_s != null) {
      plot.append(svg("line", { x1: x(m.predicted_s), x2: x(m.predicted_s), y1: top + 2, y2: top + height - 2,
        class: "model" }, null));
    }
    if (m && m.duration_s != null) {
      const cls = m.contended ? "measured contended" : "measured";
      const line = svg("line", { x1: x(m.duration_s), x2: x(m.duration_s), y1: top + 2, y2: top + height - 2, class: cls });
      line.append(svg("title", {}, `measured ${f.seconds(m.duration_s)}${m.contended ? " (contended)" : ""}`));
      plot.append(line);
      if (m.contended) plot.append(svg("text", { x: x(m.duration_s) + 4, y: top + 12, class: "contended-label" }, "contended"));
    }
    for (const p of placed) {
      const cy = top + PAD + p.level * LINE + LINE / 2;
      const g = svg("g", { class: p.beyond ? "guess beyond" : "guess", "data-student": p.student });
      g.append(svg("title", {}, `${p.student}: ${f.seconds(p.duration_s)}${p.error_s != null ? ` (off by ${f.seconds(Math.abs(p.error_s))})` : ""}`));
      g.append(p.beyond ? svg("path", { d: `M${p.px - 5},${cy - 6} L${p.px + 5},${cy} L${p.px - 5},${cy + 6} Z`, class: "dot" })
        : svg("circle", { cx: p.px, cy, r: 5.5, class: "dot" }));
      g.append(svg("text", { x: p.beyond ? p.px - 9 : p.px + 8, y: cy + 5, class: "name",
        "text-anchor": p.beyond ? "end" : "start" }, p.text));
      plot.append(g);
    }
    top += height;
  }
  plot.append(svg("line", { x1: L, x2: W - R, y1: top + 2, y2: top + 2, class: "axis" }));
  const step = niceMax(max / 5);
  for (let t = 0; t <= max + 1e-9; t += step) {
    plot.append(svg("line", { x1: x(t), x2: x(t), y1: top + 2, y2: top + 7, class: "axis" }));
    plot.append(svg("text", { x: x(t), y: top + 24, "text-anchor": "middle", class: "tick" }, f.seconds(t, t < 10 ? 1 : 0)));
  }
  return plot;
}

// How far a guess was from the measured time: "4 % off", "3.2× off" once it is more than double.
function offText(error) {
  return error < 1 ? `${Math.round(error * 100)} % off` : `${error < 10 ? (1 + error).toFixed(1) : Math.round(1 + error)}× off`;
}

function stateText(state) {
  if (!state.locked) return "guesses open";
  if (!state.revealed) return state.running ? "closed: the act is running" : "closed";
  return "revealed";
}

let teaches = false;

function renderActs(acts, guesses) {
  const box = $("acts");
  const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.act));
  box.replaceChildren();
  for (const act of acts) {
    const n = act.rows.reduce((k, r) => k + r.students.length, 0);
    const head = f.el("div", { class: "act-head" },
      f.el("h3", {}, act.title),
      f.el("span", { class: `act-state state-${act.state.revealed ? "revealed" : act.state.locked ? "closed" : "open"}` },
        stateText(act.state)),
      f.el("span", { class: "hint" }, `${n} ${n === 1 ? "guess" : "guesses"}`));
    if (teaches) {
      if (act.state.locked && !act.state.revealed) {
        head.append(f.el("button", { type: "button", class: "btn btn-small", "data-reveal": act.key,
          onclick: () => teacher("POST", `/api/v1/class/acts/${act.key}/reveal`) }, "Reveal"));
      }
      if (act.state.locked) {
        head.append(f.el("button", { type: "button", class: "btn btn-small", "data-reopen": act.key,
          onclick: () => teacher("POST", `/api/v1/class/acts/${act.key}/reopen`) }, "Reopen guesses"));
      }
    }
    const sec = f.el("div", { class: "act-plot", "data-act": act.key }, head);
    const shown = act.rows.some((r) => r.points.some((p) => p.duration_s != null) || r.measured);
    if (shown) sec.append(actPlot(act.rows));
    else if (n) sec.append(f.el("p", { class: "hint" }, `Guessed so far: ${[...new Set(act.rows.flatMap((r) => r.students))].join(", ")} (shown at the reveal)`));
    if (act.ranking.length) {
      sec.append(f.el("ol", { class: "ranking", "aria-label": `Closest guesses, ${act.title}` },
        ...act.ranking.slice(0, 8).map((r, i) => f.el("li", { "data-student": r.student },
          `${i + 1}. `, f.el("b", {}, r.student), ` ${offText(r.error)}`))));
    }
    const mine = guesses.filter((g) => act.rows.some((r) => r.key === g.target));
    if (teaches && mine.length) {
      const details = f.el("details", { "data-act": act.key, open: open.has(act.key) },
        f.el("summary", {}, `Manage guesses (${mine.length})`),
        f.el("ul", { class: "guess-list" }, ...mine.map((g) => f.el("li", {},
          `${g.student} · ${g.target}: ${g.prediction ? f.seconds(g.prediction.duration_s) : "–"} `,
          f.el("button", { type: "button", class: "icon-btn icon-btn-small", title: `Delete ${g.student}'s guess`,
            "aria-label": `Delete ${g.student}'s guess of ${g.target}`,
            onclick: () => teacher("DELETE", `/api/v1/guesses/${g.id}`) }, "×")))));
      sec.append(details);
    }
    box.append(sec);
  }
}

function renderStudents(view) {
  const byName = new Map(view.students.map((s) => [s.student, s]));
  const names = [...new Set([...view.members.map((m) => m.student), ...byName.keys()])].sort((a, b) => a.localeCompare(b));
  const body = $("students-rows");
  body.replaceChildren(...names.map((name) => {
    const s = byName.get(name) || { total: 0, unfinished: 0, by_status: {}, last_at: null };
    return f.el("tr", { "data-student": name }, f.el("td", {}, name), f.el("td", {}, String(s.total)),
      f.el("td", {}, String(s.unfinished)), f.el("td", {}, String(s.by_status.succeeded || 0)),
      f.el("td", {}, s.last_at ? f.clock(s.last_at) : "–"));
  }));
  $("students-empty").hidden = names.length > 0;
  $("students-title").textContent = names.length ? `Students (${names.length})` : "Students";
  $("class-limit").textContent = view.max_queued_per_student
    ? `at most ${view.max_queued_per_student} runs waiting or running each` : "no per-student limit";
}

function renderRuns(list) {
  const rbody = $("class-runs");
  rbody.replaceChildren(...list.runs.filter((r) => r.student).slice(0, 20).map((r) => f.el("tr", {
    "data-run": r.id, title: f.serverSummary(r.server) },
  f.el("td", {}, f.clock(r.created_at)), f.el("td", {}, r.student), f.el("td", {}, r.client),
  f.el("td", { class: `status status-${r.status}` }, r.status),
  f.el("td", { title: r.contended ? "contended: the machine was busy with other work during the copy" : "" },
    r.duration_s == null ? "–" : `${f.seconds(r.duration_s)}${r.contended ? " ⚠" : ""}`))));
}

function renderHead(view) {
  teaches = view.you === "teacher" || (view.mode === "open" && view.you === "anonymous");
  const code = view.session.code;
  $("class-join").hidden = !code;
  if (code) { $("class-code").textContent = code; $("class-url").textContent = location.host; }
  $("class-new-code").hidden = !(teaches && view.mode === "class");
  $("class-mode").textContent = view.mode === "class"
    ? (teaches ? "Students join with the code; only you (the teacher's token) cancel others' runs and manage guesses."
      : "The teacher shows the code to join.")
    : "Open lab (no LAB_TOKEN): students type a name; nothing is guarded. Set LAB_TOKEN for a class.";
}

async function teacher(method, path) {
  try { await request(method, path); } catch (err) { showMessage(err.message, "error", 6000); }
  redraw();
}

async function refresh() {
  const [view, list, { acts }] = await Promise.all([request("GET", "/api/v1/class"),
    request("GET", "/api/v1/runs?limit=60"), request("GET", "/api/v1/class/acts")]);
  renderHead(view);
  const guesses = teaches ? (await request("GET", "/api/v1/guesses")).guesses : [];
  renderActs(acts, guesses);
  renderStudents(view);
  renderRuns(list);
}

const redraw = throttle(() => refresh().catch(() => {}), REDRAW_MS);

function poll() {
  redraw();
  setTimeout(poll, POLL_MS);
}

init();
$("class-new-code").addEventListener("click", async () => {
  if (!confirm("A new code starts a new class session: every student joins again. Go on?")) return;
  await teacher("POST", "/api/v1/class/session");
});
subscribe(redraw);
start();
poll();
