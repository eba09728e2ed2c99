// How one run looks: a live card while it goes, a table row once it is done.

import { config, isPresenter, studentKey } from "./api.js";
import { studentName } from "./student.js";
import * as f from "./format.js";
import { DiskMap, drawRate, showMap } from "./diskmap.js";
import { FINAL, liveElapsed, store } from "./live.js";

const el = f.el;

export function statusLabel(run) {
  if (run.status === "running") {
    const phase = store.phase.get(run.id);
    return phase === "copy" ? "copying" : phase === "pre-zero" ? "pre-zeroing" : phase === "verify" ? "verifying"
      : phase === "setup" ? "setting up" : "running";
  }
  return run.status;
}

export function wireOf(run, progress) {
  // Prefer what the client counted itself (fast-zero attempts and refusals), else the server's log.
  if (progress) {
    const cw = progress.client && progress.client.wire;
    return cw || progress.server_wire || null;
  }
  return run.wire || null;
}

export function fastZeroText(wire) {
  if (!wire) return "–";
  const sent = wire.fast_zero ?? 0;
  const failed = wire.fast_zero_failed ?? 0;
  return `${sent} / ${failed}`;
}

export function failed(run) {
  return run.status === "failed" || run.status === "interrupted" || (FINAL.has(run.status) && run.verified === false);
}

// How far a run got: from its live progress, else what the run kept when it stopped.
export function reachedOf(run) {
  if (FINAL.has(run.status) && run.reached) return run.reached; // what the service kept: the last word
  const p = store.progress.get(run.id);
  if (p) return { fraction: p.fraction || 0, backend: p.backend || null, bytes_done: p.bytes_done };
  return run.reached || null;
}

// The model is a floor for a client with one request in flight, an upper bound for a parallel one.
export function predictedLabel(run, live = false) {
  const bound = run.model === "serial-upper-bound";
  return `${live ? "predicted so far" : "predicted"}${bound ? " (upper bound)" : ""}`;
}

// A live card is built once and then only its texts change: the Cancel button under a
// person's pointer stays the same element for the whole press, whatever events arrive.
function buildCard(run) {
  const refs = {};
  const mk = (name, tag, attrs, ...children) => (refs[name] = el(tag, attrs, ...children));
  const card = el("article", { class: "run-card", dataset: { runId: run.id }, "aria-label": `Run ${run.id}` },
    el("div", { class: "run-head" },
      mk("tag", "span", { class: "grp-tag" }),
      mk("title", "a", { class: "run-title", href: `/runs/${encodeURIComponent(run.id)}` }, run.client),
      mk("spec", "span", { class: "run-spec" }),
      mk("status", "span", { class: "status" }),
      mk("cancel", "button", { type: "button", class: "btn btn-small btn-danger cancel", dataset: { cancel: run.id },
        "aria-label": "Cancel this run", title: "Cancel this run" }, "✕", el("span", { class: "cancel-text" }, " Cancel"))),
    mk("bar", "div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-label": "copy progress" },
      mk("fill", "div", { class: "bar-fill" })),
    mk("stats", "dl", { class: "run-stats" }),
    mk("mapbox", "div", { class: "run-map" }),
    mk("contended", "div", { class: "contended-slot" }),
    mk("breakdown", "div", { class: "breakdown-slot" }),
    mk("note", "p", { class: "hint" }));
  refs.map = new DiskMap({ rows: 1, height: 10, label: "Disk map of this run" });
  refs.mapbox.append(refs.map.node);
  refs.rate = el("canvas", { class: "rate", role: "img", "aria-label": "requests per second" });
  refs.mapbox.append(refs.rate);
  card._refs = refs;
  return card;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setStats(dl, items) {
  // items: [[key, label, value]]; pairs are reused by position, only changed texts are written
  while (dl.children.length > items.length * 2) dl.lastChild.remove();
  items.forEach(([key, label, value], i) => {
    let dt = dl.children[i * 2];
    let dd = dl.children[i * 2 + 1];
    if (!dt) { dt = el("dt"); dd = el("dd"); dl.append(dt, dd); }
    setText(dt, label);
    setText(dd, String(value));
    if (dd.dataset.stat !== key) dd.dataset.stat = key;
  });
}

// A queued run's place in line and when it may start (GET /api/v1/queue, kept by live.js): "next",
// "#3 in line · about 40 s", counting down between reads of the queue.
export function waitingText(run) {
  const w = store.waiting.get(run.id);
  if (!w) return "for a worker";
  const place = w.queue_position === 1 ? "next in line" : `#${w.queue_position} in line`;
  if (w.estimated_start_s == null) return `${place} · no worker can take it yet`;
  const left = Math.max(0, w.estimated_start_s - (Date.now() - w.at) / 1000);
  if (left < 1) return place;
  return `${place} · about ${left < 90 ? `${Math.round(left)} s` : `${Math.round(left / 60)} min`}`;
}

export function renderCard(run, node = null) {
  const card = node || buildCard(run);
  const r = card._refs;
  const g = f.group(run.server);
  const progress = store.progress.get(run.id);
  const done = FINAL.has(run.status);
  const cls = `run-card grp-${g}${failed(run) ? " is-failed" : ""}`;
  if (card.className !== cls) card.className = cls;
  if (card.dataset.status !== run.status) card.dataset.status = run.status;

  r.tag.className = `grp-tag ${g}`;
  setText(r.tag, g === "N" ? "–" : g);
  // cluster mode: which worker carries it out (its expected_s is that worker's calibration)
  const where = run.worker ? ` · on ${run.worker.name}` : "";
  setText(r.spec, f.serverSummary(run.server) + where);
  r.spec.title = `${f.serverSummary(run.server)} · ${f.geometry(run.server)}${where}`;
  r.status.className = `status status-${run.status}`;
  setText(r.status, statusLabel(run));
  // the presenter cancels any run; a joined student their own (the service checks it too)
  const mine = Boolean(studentKey()) && Boolean(run.student) && run.student === studentName();
  const canCancel = !done && (isPresenter() || mine);
  r.cancel.hidden = !canCancel;
  if (done) r.cancel.disabled = true;

  const reached = reachedOf(run);
  let fraction = 0;
  if (run.status === "succeeded") fraction = 1;
  else if (reached) fraction = reached.fraction || 0;
  const indeterminate = !done && !progress && run.status === "running";
  r.fill.classList.toggle("is-indeterminate", indeterminate);
  r.fill.style.transform = indeterminate ? "" : `scaleX(${Math.round(fraction * 1000) / 1000})`;
  r.bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));

  let items;
  if (run.status === "succeeded" || (done && run.duration_s !== null && run.duration_s !== undefined)) {
    items = [
      ["time", "time", f.seconds(run.duration_s)],
      ...(run.expected_s != null ? [["expected", "expected", f.interval(run.expected_s, run.expected_low_s, run.expected_high_s)]] : []),
      ["predicted", run.expected_s != null ? "floor" : predictedLabel(run), f.seconds(run.predicted_s)],
      ["writes", "writes", run.backend ? run.backend.write_ops : "–"],
      ["zeroes", "zeroes", run.backend ? run.backend.zero_ops : "–"],
      ["fast", "fast zero sent/refused", fastZeroText(run.wire)],
      ["verified", "verified", run.verified === true ? "yes" : run.verified === false ? "NO" : "–"],
    ];
  } else if (done) {
    // stopped early: how far it got
    const b = (reached && reached.backend) || run.backend || {};
    items = [
      ["reached", "reached", reached ? `${Math.round((reached.fraction || 0) * 100)}%` : "–"],
      ["writes", "writes", b.write_ops ?? "–"],
      ["zeroes", "zeroes", b.zero_ops ?? "–"],
      ["elapsed", "after", reached && reached.elapsed_s !== undefined ? f.seconds(reached.elapsed_s, 1) : "–"],
    ];
  } else if (progress) {
    const b = progress.backend || {};
    const wire = wireOf(run, progress);
    items = [
      ["done", "written", `${Math.round((progress.fraction || 0) * 100)}%`],
      ["elapsed", "elapsed", f.seconds(liveElapsed(run.id), 1)],
      ["predicted", predictedLabel(run, true), f.seconds(progress.predicted_so_far_s, 1)],
      ["writes", "writes", b.write_ops ?? 0],
      ["zeroes", "zeroes", b.zero_ops ?? 0],
    ];
    if (wire && (wire.fast_zero || wire.fast_zero_failed)) items.push(["fast", "fast zero sent/refused", fastZeroText(wire)]);
  } else {
    items = [["state", run.status === "queued" ? "waiting" : "starting", run.status === "queued" ? waitingText(run) : "the server…"],
      ["geometry", "geometry", f.geometry(run.server)]];
  }
  setStats(r.stats, items);
  markOutside(r.stats.querySelector('dd[data-stat="expected"]'), run);

  const live = store.cells.get(run.id);
  const map = done ? run.diskmap || live : live || run.diskmap; // live cells may show BLOCK_STATUS asks
  r.mapbox.hidden = !map;
  if (map) {
    showMap(r.map, map);
    const refused = progress && !done ? ((wireOf(run, progress) || {}).fast_zero_failed || 0) : 0;
    if (refused > (r.refused || 0)) r.map.flash("R", 0, r.map.cells.length); // a refused fast zero: a flash
    r.refused = refused;
    const series = store.series.get(run.id);
    if (series && series.length > 1 && r.rate._n !== series.length) {
      r.rate._n = series.length;
      drawRate(r.rate, series, { height: 28, label: "backend requests per second" });
    }
    r.rate.hidden = !(series && series.length > 1);
  }

  // other work competed for the CPU, or the run's own processes burned more CPU than calibrated:
  // said once the run is done
  const contended = done && (run.contended || slowPath(run));
  if (contended && !r.contended.firstChild) r.contended.append(...contendedNote(run));
  r.contended.hidden = !contended;
  // the expectation's breakdown, once, when the run is done (it never changes after)
  const wantBreakdown = done && run.breakdown && run.expected_s;
  if (wantBreakdown && !r.breakdown.firstChild) r.breakdown.append(breakdownBar(run));
  r.breakdown.hidden = !wantBreakdown;

  let note = "";
  let noteCls = "hint";
  if (run.error && failed(run)) { note = run.error; noteCls = "run-error"; } else if (run.status === "cancelled") note = run.error || "cancelled";
  if (r.note.className !== noteCls) r.note.className = noteCls;
  setText(r.note, note);
  r.note.hidden = !note;
  return card;
}

export const slowPath = (run) => Boolean(run.contention && run.contention.slow_copy_path);

// The expected time of a run that fell outside its interval is marked, and says which way.
function markOutside(node, run) {
  if (!node) return;
  const outside = f.outsideText(run);
  const cls = outside ? (run.model_verdict === "slower-than-model" ? "outside outside-slower" : "outside outside-faster") : "";
  if (node.className !== cls) node.className = cls;
  if ((node.title || "") !== outside) node.title = outside;
}

// Why this time is not a clean measurement: others competed for the CPU, and/or the run's own
// processes burned more CPU than the calibration expects for its counts (both can be true).
export function contendedNote(run) {
  const c = run.contention || {};
  const notes = [];
  if (run.contended) {
    notes.push(el("p", { class: "contended", title: "whole machine, /proc/stat, minus this run's own processes" },
      el("b", {}, "contended: "),
      `other work used ${(c.others_cores ?? 0).toFixed(2)} cores during the copy (limit ${(c.limit_cores ?? 0).toFixed(2)}); `
      + "this time is not a clean measurement"));
  }
  if (slowPath(run)) {
    notes.push(el("p", { class: "contended", title: "the run's own processes' CPU against the calibration's for its counts" },
      el("b", {}, "slow copy path: "),
      `this run's processes used ${(c.own_cpu_s ?? 0).toFixed(2)} s of CPU where ${(c.expected_own_cpu_s ?? 0).toFixed(2)} s `
      + "were expected; this time overstates the copy's cost"));
  }
  return notes;
}

// Where the expected time goes: the injected delays (the floor), then this machine's measured
// per-request, per-byte and fixed costs (lab calibrate); a tick marks the measured time.
const PARTS = [["delays_s", "delays"], ["per_request_s", "per request"], ["per_byte_s", "per byte"], ["fixed_s", "fixed"]];

function breakdownBar(run) {
  const b = run.breakdown;
  const span = Math.max(run.expected_high_s || 0, run.expected_s, run.duration_s || 0) || 1;
  const pct = (v) => `${Math.max(0, Math.min(100, (100 * v) / span)).toFixed(2)}%`;
  const segs = PARTS.filter(([k]) => b[k] > 0).map(([k, label]) => {
    const s = el("span", { class: `bd-seg bd-${k.replace("_s", "")}`, title: `${label}: ${f.seconds(b[k])}` });
    s.style.width = pct(b[k]);
    return s;
  });
  const tick = el("span", { class: "bd-tick", title: `measured ${f.seconds(run.duration_s)}` });
  tick.style.left = pct(run.duration_s || 0);
  // the interval that holds expected_coverage of runs: a band over the bar
  const hasBand = run.expected_low_s != null && run.expected_high_s != null;
  const band = hasBand ? el("span", { class: "bd-band", title: `${Math.round((run.expected_coverage || 0) * 100)}% of runs land in ${f.interval(run.expected_s, run.expected_low_s, run.expected_high_s)}` }) : null;
  if (band) { band.style.left = pct(run.expected_low_s); band.style.width = pct(run.expected_high_s - run.expected_low_s); }
  const outside = f.outsideText(run);
  const factor = run.machine_factor != null ? `machine now ×${run.machine_factor.toFixed(2)}` : "";
  const legend = el("div", { class: "bd-legend" }, ...PARTS.filter(([k]) => b[k] > 0).map(([k, label]) =>
    el("span", {}, el("i", { class: `bd-key bd-${k.replace("_s", "")}` }), `${label} ${f.seconds(b[k])}`)),
    el("span", { class: "k" }, `measured / expected ${(run.duration_s / run.expected_s).toFixed(3)}`),
    factor ? el("span", { class: "k", title: "a control copy just before, against the calibration's: the expectation is scaled by it" }, factor) : null,
    run.calibration_stale ? el("span", { class: "outside", title: "the calibration's control drifted beyond what the intervals allow for: lab calibrate" }, "calibration stale") : null);
  const verdict = outside ? el("p", { class: `outside outside-${run.model_verdict === "slower-than-model" ? "slower" : "faster"}` },
    el("b", {}, "outside the model: "), `${outside}; expected ${f.interval(run.expected_s, run.expected_low_s, run.expected_high_s)}`) : null;
  return el("div", { class: "breakdown", role: "img",
    "aria-label": `expected ${f.interval(run.expected_s, run.expected_low_s, run.expected_high_s)}: `
      + PARTS.map(([k, l]) => `${l} ${f.seconds(b[k])}`).join(", ") + (outside ? `; ${outside}` : "") },
  el("div", { class: "bd-bar" }, ...segs, band, tick), legend, verdict);
}

function td(label, content, cls = null) {
  return el("td", { "data-label": label, class: cls, role: "cell" }, content);
}

function verifiedCell(run) {
  if (run.status === "succeeded" && run.verified) return el("span", { class: "ok", title: "the copy matches the source" }, "✓");
  if (run.verified === false) return el("span", { class: "bad", title: "the copy does NOT match the source" }, "✗ NO");
  if (run.status === "failed" || run.status === "interrupted") return el("span", { class: "bad" }, run.status);
  if (run.status === "cancelled") {
    const reached = run.reached && run.reached.fraction !== undefined ? ` at ${Math.round(run.reached.fraction * 100)}%` : "";
    return el("span", { class: "muted" }, `cancelled${reached}`);
  }
  return el("span", { class: "muted" }, run.status);
}

export function renderRow(run, isNew = false) {
  const g = f.group(run.server);
  const tr = el("tr", { role: "row", dataset: { runId: run.id, status: run.status }, class: [failed(run) ? "is-failed" : "", isNew ? "is-new" : ""].join(" ").trim() || null });
  const geo = f.shortGeometry(run.server, config.spec_defaults);
  const server = el("div", {},
    el("span", { class: `grp-tag ${g}` }, g === "N" ? "–" : g),
    el("span", { class: "mono nowrap" }, `${run.server.zeromode} / ${run.server.fastzeromode}`),
    geo ? el("div", { class: "hint" }, geo) : null);
  if (run.error && run.status !== "succeeded") server.append(el("span", { class: "err" }, run.error));
  tr.append(
    td("Run", [el("a", { class: "nowrap run-link", href: `/runs/${encodeURIComponent(run.id)}` }, run.client), " ",
      el("span", { class: "hint when" }, [f.clock(run.started_at || run.created_at), run.label].filter(Boolean).join(" · "))], "wide"),
    td("Server", server, "wide"),
    td("Time", [el("b", {}, f.seconds(run.duration_s)),
      run.expected_s != null ? el("div", { class: "hint" }, `${f.interval(run.expected_s, run.expected_low_s, run.expected_high_s)} exp.`) : null,
      f.outsideText(run) ? el("div", { class: `hint outside outside-${run.model_verdict === "slower-than-model" ? "slower" : "faster"}`,
        title: f.outsideText(run) }, run.model_verdict === "slower-than-model" ? "▲ slower than model" : "▼ faster than model") : null,
      run.predicted_s !== null && run.predicted_s !== undefined
        ? el("div", { class: "hint" }, `${run.model === "serial-upper-bound" ? "≤ " : ""}${f.seconds(run.predicted_s)} ${run.expected_s != null ? "floor" : "pred."}`) : null], "num"),
    td("Verified", run.contended || slowPath(run) ? [verifiedCell(run), el("div", { class: "hint contended",
      title: "other work competed for the CPU, or the run's own processes used more CPU than calibrated" },
      [run.contended ? "contended" : null, slowPath(run) ? "slow path" : null].filter(Boolean).join(", "))]
      : verifiedCell(run)),
    td("Writes", run.backend ? run.backend.write_ops : "–", "num"),
    td("Zeroes", run.backend ? run.backend.zero_ops : "–", "num"),
    td("Fast zero sent / refused", fastZeroText(run.wire), "num"),
  );
  return tr;
}
