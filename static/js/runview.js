// How one run looks: a live card while it goes, a table row once it is done.

import { config, isPresenter } from "./api.js";
import * as f from "./format.js";
import { FINAL, liveElapsed, store } from "./live.js";

const el = f.el;

export function statusLabel(run) {
  if (run.status === "running") {
    const phase = store.phase.get(run.id);
    return phase === "copy" ? "copying" : phase === "verify" ? "verifying" : phase === "setup" ? "setting up" : "running";
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

function stat(k, v) {
  return el("span", {}, el("span", { class: "k" }, `${k} `), el("b", {}, v));
}

export function renderCard(run, node = null) {
  const g = f.group(run.server);
  const progress = store.progress.get(run.id);
  const done = FINAL.has(run.status);
  const card = node || el("article", { class: "run-card", dataset: { runId: run.id }, "aria-label": `Run ${run.id}` });
  card.className = `run-card grp-${g}${failed(run) ? " is-failed" : ""}`;
  card.dataset.status = run.status;

  const head = el("div", { class: "run-head" },
    el("span", { class: `grp-tag ${g}` }, g === "N" ? "–" : g),
    el("span", { class: "run-title" }, run.client),
    el("span", { class: "run-spec", title: `${f.serverSummary(run.server)} · ${f.geometry(run.server)}` },
      f.serverSummary(run.server)),
    el("span", { class: `status status-${run.status}` }, statusLabel(run)),
  );
  if (!done && isPresenter()) {
    head.append(el("button", { type: "button", class: "btn btn-small btn-danger cancel", dataset: { cancel: run.id },
      "aria-label": "Cancel this run", title: "Cancel this run" }, "✕", el("span", { class: "cancel-text" }, " Cancel")));
  }

  let fraction = 0;
  if (done) fraction = run.status === "succeeded" ? 1 : progress ? progress.fraction : 0;
  else if (progress) fraction = progress.fraction || 0;
  const fill = el("div", { class: "bar-fill" });
  fill.style.width = `${Math.round(fraction * 1000) / 10}%`;
  if (!done && !progress && run.status === "running") fill.classList.add("is-indeterminate");
  const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": Math.round(fraction * 100), "aria-label": "copy progress" }, fill);

  const stats = el("div", { class: "run-stats" });
  if (done) {
    stats.append(
      stat("time", f.seconds(run.duration_s)),
      ...(run.expected_s != null ? [stat("expected", f.seconds(run.expected_s))] : []),
      stat(run.expected_s != null ? "floor" : "predicted", f.seconds(run.predicted_s)),
      stat("writes", run.backend ? run.backend.write_ops : "–"),
      stat("zeroes", run.backend ? run.backend.zero_ops : "–"),
      stat("fast zero sent/refused", fastZeroText(run.wire)),
      stat("verified", run.verified === true ? "yes" : run.verified === false ? "NO" : "–"),
    );
  } else if (progress) {
    const b = progress.backend || {};
    const wire = wireOf(run, progress);
    stats.append(
      stat("done", `${Math.round((progress.fraction || 0) * 100)}%`),
      stat("requests cover", f.bytes(progress.bytes_done)),
      stat("elapsed", f.seconds(liveElapsed(run.id), 1)),
      stat("predicted so far", f.seconds(progress.predicted_so_far_s, 1)),
      stat("writes", b.write_ops ?? 0),
      stat("zeroes", b.zero_ops ?? 0),
    );
    if (wire && (wire.fast_zero || wire.fast_zero_failed)) stats.append(stat("fast zero sent/refused", fastZeroText(wire)));
  } else {
    stats.append(el("span", { class: "k" }, run.status === "queued" ? "waiting for a worker" : "starting the server…"),
      el("span", { class: "k" }, f.geometry(run.server)));
  }

  const children = [head, bar, stats];
  if (done && run.contended) children.push(contendedNote(run));
  if (done && run.breakdown && run.expected_s) children.push(breakdownBar(run));
  if (run.error && failed(run)) children.push(el("p", { class: "run-error" }, run.error));
  else if (run.status === "cancelled") children.push(el("p", { class: "hint" }, run.error || "cancelled"));
  card.replaceChildren(...children);
  return card;
}

function contendedNote(run) {
  const c = run.contention || {};
  return el("p", { class: "contended", title: "whole machine, /proc/stat, minus this run's own processes" },
    el("b", {}, "contended: "),
    `other work used ${(c.others_cores ?? 0).toFixed(2)} cores during the copy (limit ${(c.limit_cores ?? 0).toFixed(2)}); `
    + "this time is not a clean measurement");
}

// Where the expected time goes: the injected delays (the floor), then this machine's measured
// per-request, per-byte and fixed costs (lab calibrate); a tick marks the measured time.
const PARTS = [["delays_s", "delays"], ["per_request_s", "per request"], ["per_byte_s", "per byte"], ["fixed_s", "fixed"]];

function breakdownBar(run) {
  const b = run.breakdown;
  const span = Math.max(run.expected_s, run.duration_s || 0) || 1;
  const pct = (v) => `${Math.max(0, Math.min(100, (100 * v) / span)).toFixed(2)}%`;
  const segs = PARTS.filter(([k]) => b[k] > 0).map(([k, label]) => {
    const s = el("span", { class: `bd-seg bd-${k.replace("_s", "")}`, title: `${label}: ${f.seconds(b[k])}` });
    s.style.width = pct(b[k]);
    return s;
  });
  const tick = el("span", { class: "bd-tick", title: `measured ${f.seconds(run.duration_s)}` });
  tick.style.left = pct(run.duration_s || 0);
  const legend = el("div", { class: "bd-legend" }, ...PARTS.filter(([k]) => b[k] > 0).map(([k, label]) =>
    el("span", {}, el("i", { class: `bd-key bd-${k.replace("_s", "")}` }), `${label} ${f.seconds(b[k])}`)),
    el("span", { class: "k" }, `measured / expected ${(run.duration_s / run.expected_s).toFixed(3)}`));
  return el("div", { class: "breakdown", role: "img",
    "aria-label": `expected ${f.seconds(run.expected_s)}: ` + PARTS.map(([k, l]) => `${l} ${f.seconds(b[k])}`).join(", ") },
  el("div", { class: "bd-bar" }, ...segs, tick), legend);
}

function td(label, content, cls = null) {
  return el("td", { "data-label": label, class: cls }, content);
}

function verifiedCell(run) {
  if (run.status === "succeeded" && run.verified) return el("span", { class: "ok", title: "the copy matches the source" }, "✓");
  if (run.verified === false) return el("span", { class: "bad", title: "the copy does NOT match the source" }, "✗ NO");
  if (run.status === "failed" || run.status === "interrupted") return el("span", { class: "bad" }, run.status);
  if (run.status === "cancelled") return el("span", { class: "muted" }, "cancelled");
  return el("span", { class: "muted" }, run.status);
}

export function renderRow(run, isNew = false) {
  const g = f.group(run.server);
  const tr = el("tr", { dataset: { runId: run.id, status: run.status }, class: [failed(run) ? "is-failed" : "", isNew ? "is-new" : ""].join(" ").trim() || null });
  const geo = f.shortGeometry(run.server, config.spec_defaults);
  const server = el("div", {},
    el("span", { class: `grp-tag ${g}` }, g === "N" ? "–" : g),
    el("span", { class: "mono nowrap" }, `${run.server.zeromode} / ${run.server.fastzeromode}`),
    geo ? el("div", { class: "hint" }, geo) : null);
  if (run.error && run.status !== "succeeded") server.append(el("span", { class: "err" }, run.error));
  tr.append(
    td("Run", [el("b", { class: "nowrap" }, run.client), " ",
      el("span", { class: "hint when" }, [f.clock(run.started_at || run.created_at), run.label].filter(Boolean).join(" · "))], "wide"),
    td("Server", server, "wide"),
    td("Time", [el("b", {}, f.seconds(run.duration_s)),
      run.expected_s != null ? el("div", { class: "hint" }, `${f.seconds(run.expected_s)} exp.`) : null,
      run.predicted_s !== null && run.predicted_s !== undefined
        ? el("div", { class: "hint" }, `${f.seconds(run.predicted_s)} ${run.expected_s != null ? "floor" : "pred."}`) : null], "num"),
    td("Verified", run.contended ? [verifiedCell(run), el("div", { class: "hint contended",
      title: "other work competed for the CPU during the copy" }, "contended")] : verifiedCell(run)),
    td("Writes", run.backend ? run.backend.write_ops : "–", "num"),
    td("Zeroes", run.backend ? run.backend.zero_ops : "–", "num"),
    td("Fast zero sent / refused", fastZeroText(run.wire), "num"),
  );
  return tr;
}
