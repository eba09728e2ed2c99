// One lane of a talk act: what it says (an honest state, never an old result passed off as new),
// and its DOM, built once and then only changed in place (texts, transforms, the map).
//
// A lane's run is the newest run of its row since the act was reset, whatever its status: a
// cancelled or failed run is shown as such. An earlier result appears only as "last run,
// <time ago>", never in the bar or the big time.

import { rowSpec, runsForRow } from "./chart.js";
import { DiskMap, cellSizeFor, showMap } from "./diskmap.js";
import * as f from "./format.js";
import { FINAL, liveElapsed, store } from "./live.js";
import { reachedOf, waitingText } from "./runview.js";

const el = f.el;

// What A and B are, in words, on every lane.
const NAMES = {
  A: ["A", "zeroing is metadata"],
  B: ["B", "zeroing falls back to writes"],
  N: ["", "No write-zeroes: holes sent as data"],
};

const mib = (n) => `${Math.round(n / 2 ** 20)} MiB`;

// `short`: in the block-status grid, whose columns are headed by the storage, a lane is its size.
export function laneName(row, { short = false } = {}) {
  const spec = rowSpec(row);
  // the block-status rows: where the disk is kept ("tmpfs, reused disk, 32 MiB ..." -> "tmpfs") and its size
  if (row.server && row.server.storage) return { badge: "", text: short ? mib(spec.size) : `${row.label.split(",")[0]} · ${mib(spec.size)}` };
  const [badge, text] = NAMES[row.group || f.group(spec)] || NAMES.N;
  return { badge, text };
}

export function laneTitle(row) {
  const { badge, text } = laneName(row);
  return badge ? `${badge} (${text})` : text;
}

export function ago(epoch) {
  const s = Math.max(0, Date.now() / 1000 - (epoch || 0));
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

const ok = (r) => r.status === "succeeded" && r.verified !== false;

// The block-status act measures the questions: its lanes lead with BLOCK_STATUS time.
export const asksFirst = (act) => act.rows.some((r) => r.client === "qemu-bs");

/**
 * What a lane shows. `ctx`: {act, acts, byRow, since, cancelling (Set of run ids)}.
 * state: ready | queued | running | cancelling | done | failed | cancelled | interrupted.
 */
export function laneOf(row, ctx) {
  const all = runsForRow(row, ctx.byRow);
  const fresh = all.filter((r) => (r.created_at || 0) >= ctx.since);
  const run = fresh[0] || null;
  const lane = { row, group: row.group || f.group(rowSpec(row)), run, state: "ready", value: null, part: null,
    last: fresh.find((r) => r !== run && ok(r)) || null };
  if (run) {
    const s = run.status;
    lane.state = s === "succeeded" ? (run.verified === false ? "failed" : "done") : s;
    if ((s === "running" || s === "queued") && ctx.cancelling.has(run.id)) lane.state = "cancelling";
    if (s === "running") lane.value = liveElapsed(run.id) ?? 0;
    else if (FINAL.has(s)) lane.value = run.duration_s ?? (reachedOf(run) || {}).elapsed_s ?? null;
    if (asksFirst(ctx.act)) lane.part = askTime(run);
  }
  // the 2019 time holds only where the run is at the row's own geometry (the service says so)
  const ref = row.reference && row.reference.time_s;
  lane.ref = ref && (!run || (run.scenario_rows || {})[row.key] === true) ? ref : null;
  lane.refHidden = Boolean(ref && !lane.ref);
  // the model's expectation: this run's, else the newest run of the row at its own geometry
  const exp = (run && run.expected_s != null ? run : null)
    || all.find((r) => r.expected_s != null && (r.scenario_rows || {})[row.key] === true) || null;
  lane.expected = exp ? { s: exp.expected_s, low: exp.expected_low_s ?? null, high: exp.expected_high_s ?? null,
    own: exp === run } : null;
  lane.beside = besideOf(row, ctx);
  return lane;
}

function askTime(run) {
  if (run.status === "running") {
    const p = store.progress.get(run.id);
    const w = p && p.client && p.client.wire;
    return w ? w.block_status_s ?? null : null;
  }
  return run.wire ? run.wire.block_status_s ?? null : null;
}

// The same server's result in the act this one is told against (act 5's B beside its act 3).
function besideOf(row, ctx) {
  const other = ctx.act.beside && ctx.acts.find((a) => a.key === ctx.act.beside);
  const twin = other && other.rows.find((r) => r.group === row.group);
  if (!twin) return null;
  const run = runsForRow(twin, ctx.byRow).find((r) => ok(r) && (r.scenario_rows || {})[twin.key] === true);
  return run ? { s: run.duration_s, label: `act ${(other.title.match(/^(\w+)\./) || [])[1] || other.key}`, run } : null;
}

// --- words --------------------------------------------------------------------------------------
function countsOf(lane) {
  const run = lane.run;
  if (!run) return null;
  if (run.status === "running") {
    const p = store.progress.get(run.id);
    return p ? { b: p.backend, wire: (p.client && p.client.wire) || p.server_wire } : null;
  }
  const reached = reachedOf(run);
  return { b: run.backend || (reached && reached.backend), wire: run.wire };
}

function countParts(lane, act) {
  const c = countsOf(lane);
  if (!c || !c.b) return [];
  const wire = c.wire || {};
  if (asksFirst(act)) return [`${wire.block_status ?? 0} asked`]; // the big time is the asking
  const parts = [f.plural(c.b.write_ops ?? 0, "write"), f.plural(c.b.zero_ops ?? 0, "zero", "zeroes")];
  if (wire.fast_zero) parts.push(`${wire.fast_zero} fast`);
  return parts;
}

// The refused fast zeroes so far: a counter that stays.
export function refusedOf(lane) {
  const c = countsOf(lane);
  return (c && c.wire && c.wire.fast_zero_failed) || 0;
}

const PHASES = { setup: "setting up", "pre-zero": "pre-zeroing", copy: "copying", verify: "verifying" };

export function stateWords(lane, act, connected) {
  const run = lane.run;
  switch (lane.state) {
    case "ready": return ["ready", ""];
    case "queued": return ["queued", waitingText(run)]; // its place in line (GET /api/v1/queue, the scheduler's)
    case "cancelling": return ["cancelling…", countParts(lane, act).join(" · ")];
    case "running": {
      const phase = PHASES[store.phase.get(run.id)] || "running";
      return [connected ? phase : "no news", [connected ? "" : "connection lost: the clock is stopped",
        ...countParts(lane, act)].filter(Boolean).join(" · ")];
    }
    case "done": return [asksFirst(act) ? "" : "verified ✓", countParts(lane, act).join(" · ")];
    case "cancelled": {
      const reached = reachedOf(run);
      const at = reached && reached.elapsed_s != null ? `at ${f.seconds(reached.elapsed_s, 1)}` : "";
      const pct = reached && reached.fraction != null ? `${Math.round(reached.fraction * 100)}% copied` : "";
      return ["cancelled", [at, pct, ...countParts(lane, act)].filter(Boolean).join(" · ")];
    }
    case "interrupted": return ["interrupted", ["the service stopped during the run", ...countParts(lane, act)].join(" · ")];
    default: return ["✗ failed", [run.verified === false ? "copy NOT verified" : run.error || run.status,
      ...countParts(lane, act)].join(" · ")];
  }
}

// The big number: the copy time (or, in the block-status act, the time spent asking).
export function bigTime(lane, act) {
  const running = lane.state === "running" || lane.state === "cancelling";
  if (lane.state === "done" || running || lane.state === "failed") {
    const v = asksFirst(act) ? (lane.part ?? (running ? null : undefined)) : lane.value;
    if (v === null || v === undefined) return { text: running ? "…" : "–", muted: true };
    return { text: f.seconds(v, running ? 1 : 2), muted: lane.state === "failed" };
  }
  return { text: "–", muted: true };
}

// --- the DOM -------------------------------------------------------------------------------------
export function buildLane(row, { mapRows = 2, short = false } = {}) {
  const refs = {};
  const mk = (name, tag, attrs, ...children) => (refs[name] = el(tag, attrs, ...children));
  const { badge, text } = laneName(row, { short });
  const node = el("div", { class: "lane", dataset: { row: row.key, state: "ready" } },
    el("div", { class: "lane-name", title: `${row.client} · zeromode=${rowSpec(row).zeromode} · fastzeromode=${rowSpec(row).fastzeromode}` },
      badge ? el("span", { class: "lane-badge" }, badge) : null, badge ? el("span", { class: "visually-hidden" }, ": ") : null,
      text),
    el("div", { class: "lane-time is-secondary" }, mk("time", "span", { class: "lane-secs" }, "–"),
      mk("unit", "span", { class: "lane-unit" }),
      mk("flag", "span", { class: "lane-flag", title: "contended: the machine was busy with other work during this run" })),
    mk("state", "div", { class: "lane-state" }, mk("word", "span", { class: "state-word" }, "ready"),
      mk("refusedCount", "span", { class: "refused-count" }), mk("detail", "span", {}, "")),
    mk("track", "div", { class: "lane-track" },
      mk("band", "div", { class: "mark-band", hidden: true }),
      mk("fill", "div", { class: "lane-fill" }),
      mk("partBar", "div", { class: "lane-part", hidden: true }),
      mk("markExp", "div", { class: "mark mark-exp", hidden: true }),
      mk("markBeside", "div", { class: "mark mark-beside", hidden: true }),
      mk("markRef", "div", { class: "mark mark-ref", hidden: true })),
    mk("mapbox", "div", { class: "lane-map" }),
    mk("marks", "div", { class: "lane-marks" }, "\u00a0"));
  refs.map = new DiskMap({ rows: mapRows, height: 20, label: `Disk map, ${laneTitle(row)}` });
  refs.mapbox.append(refs.map.node);
  refs.refused = 0;
  return { node, refs, row };
}

function set(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function place(node, value, scale) {
  node.hidden = value === null || value === undefined;
  if (!node.hidden) node.style.transform = `translateX(${Math.min(100, (value / scale) * 100).toFixed(3)}%)`;
}

function scaleX(node, value, scale) {
  node.style.transform = `scaleX(${value ? Math.min(1, value / scale).toFixed(4) : 0})`;
}

export function updateLane(dom, lane, { act, scale, connected }) {
  const { node, refs } = dom;
  node.dataset.state = lane.state;
  node.dataset.phase = lane.state === "running" ? store.phase.get(lane.run.id) || "setup" : "";
  node.dataset.contended = lane.run && lane.run.contended ? "true" : "false";
  const [word, detail] = stateWords(lane, act, connected);
  set(refs.word, word);
  // a refused fast zero is the mechanism of act 5: its counter comes first and stays
  const refused = refusedOf(lane);
  set(refs.refusedCount, refused ? `${refused} refused` : "");
  refs.refusedCount.title = refused ? `${refused} fast zero request${refused === 1 ? " was" : "s were"} refused (ENOTSUP)` : "";
  set(refs.detail, detail);
  const big = bigTime(lane, act);
  const [secs, unit] = big.text.split(" ");
  set(refs.time, secs);
  set(refs.unit, unit ? ` ${unit}` : "");
  set(refs.flag, lane.run && lane.run.contended && unit ? "⚠" : "");
  refs.time.parentNode.classList.toggle("is-secondary", big.muted);
  // the bar and the marks, on the act's one axis
  const shown = ["ready", "queued"].includes(lane.state) ? null : lane.value;
  scaleX(refs.fill, shown, scale);
  refs.partBar.hidden = lane.part == null || shown == null;
  if (!refs.partBar.hidden) scaleX(refs.partBar, lane.part, scale);
  place(refs.markRef, lane.ref, scale);
  place(refs.markExp, lane.expected ? lane.expected.s : null, scale);
  const band = lane.expected && lane.expected.low != null && lane.expected.high != null ? lane.expected : null;
  refs.band.hidden = !band;
  if (band) {
    refs.band.style.transform = `translateX(${((band.low / scale) * 100).toFixed(3)}%) scaleX(${((band.high - band.low) / scale).toFixed(4)})`;
  }
  place(refs.markBeside, lane.beside ? lane.beside.s : null, scale);
  refs.markRef.title = lane.ref ? `2019: ${f.seconds(lane.ref)}` : "";
  // the marks, in words
  const marks = [];
  if (lane.ref) marks.push(el("span", {}, el("span", { class: "sym-ref" }, "◆"), ` 2019: ${f.seconds(lane.ref)}`));

  if (lane.expected) {
    const e = lane.expected; // spelt as everywhere else: "expected 3.3 s (3.1–3.5)" (format.js interval)
    marks.push(el("span", { class: "mark-expected" }, el("span", { class: "sym-exp" }, "┆"), ` expected ${f.interval(e.s, e.low, e.high)}`));
  }
  if (lane.beside) marks.push(el("span", {}, el("span", { class: "sym-beside" }, "●"), ` ${lane.beside.label}: ${f.seconds(lane.beside.s)}`));
  if (!marks.length && act.no_reference) marks.push(el("span", {}, "no 2019 time for this act"));
  if (lane.refHidden) marks.push(el("span", { title: "the 2019 time holds for the talk's geometry only" }, "not at the talk's geometry: no 2019 mark"));
  if (lane.run && lane.run.contended && FINAL.has(lane.run.status)) {
    marks.push(el("span", { class: "contended-tag" }, "⚠ contended: the machine was busy"));
  }
  // an earlier result, only ever labelled as such
  if (lane.last && lane.state !== "done") {
    marks.push(el("span", { class: "lane-last" }, `last run, ${ago(lane.last.created_at)}: ${f.seconds(lane.last.duration_s)}`));
  }
  const key = marks.map((m) => m.textContent).join("|");
  if (refs.marksKey !== key) { refs.marksKey = key; refs.marks.replaceChildren(...(marks.length ? marks : ["\u00a0"])); }
  updateMap(dom, lane);
}

function updateMap(dom, lane) {
  const { refs, row } = dom;
  const run = lane.run;
  const live = run && store.cells.get(run.id);
  // a finished run shows its own map (the last live cells may still show BLOCK_STATUS questions)
  const m = run && lane.state !== "ready" && lane.state !== "queued"
    ? (run.status === "running" ? live || run.diskmap : run.diskmap || live) : null;
  if (m) {
    showMap(refs.map, m);
    const refused = refusedOf(lane);
    if (run.status === "running" && refused > refs.refused) refs.map.flash("R", 0, refs.map.cells.length);
    refs.refused = refused;
  } else {
    const size = rowSpec(row).size;
    if (typeof size === "number") {
      const cell = cellSizeFor(size);
      refs.map.setCells(".".repeat(Math.ceil(size / cell)), cell);
    }
    refs.refused = 0;
  }
  refs.mapbox.classList.toggle("is-blank", !m);
}

// The act's one time axis: a nice round end past every bar and mark, and ticks to read it.
export function axisScale(lanes) {
  const values = lanes.flatMap((l) => [l.value, l.ref, l.expected && (l.expected.high ?? l.expected.s),
    l.beside && l.beside.s]).filter((v) => typeof v === "number" && v > 0);
  const max = Math.max(0, ...values) * 1.08;
  if (!max) return { end: 10, step: 2 };
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  return { end: Math.ceil(max / step) * step, step };
}

export function drawAxis(box, { end, step }) {
  const key = `${end}|${step}`;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const ticks = [];
  for (let v = 0; v <= end + 1e-9 && ticks.length < 12; v += step) {
    const pct = (v / end) * 100;
    const label = `${+v.toFixed(2)}`;
    ticks.push(el("div", { class: "tick", style: `transform: translateX(${pct.toFixed(3)}%)` },
      pct < 96 ? el("span", {}, label) : null));
  }
  box.replaceChildren(...ticks, el("span", { class: "axis-unit" }, "seconds"));
}
