// The cluster's workers (GET /api/v1/workers): who is there, how busy, how fresh its calibration and its
// heartbeat. Heartbeats are not events on the lab's stream, so the table is read again every 2 s, and at
// once when a run starts or ends (the stream says so).

import { request } from "./api.js";
import { init } from "./common.js";
import { $, el } from "./format.js";
import { start, subscribe } from "./live.js";

const EVERY_MS = 2000;

function ago(s) {
  if (s === null || s === undefined) return "not calibrated";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

// "kind:nbdkit", "storage:xfs", "root" -> "nbdkit, qemu-nbd · 7 storages · root" (all of them in the title)
function offers(caps) {
  const kinds = caps.filter((c) => c.startsWith("kind:")).map((c) => c.slice(5));
  const storages = caps.filter((c) => c.startsWith("storage:"));
  return [kinds.join(", "), storages.length ? `${storages.length} storages` : "", caps.includes("root") ? "root" : ""]
    .filter(Boolean).join(" · ");
}

function cell(label, attrs, ...children) {
  return el("td", { "data-label": label, ...attrs }, ...children);
}

function row(w) {
  const m = w.machine || {};
  const running = w.running.length
    ? w.running.flatMap((id, i) => [i ? " " : "", el("a", { href: `/runs/${encodeURIComponent(id)}`, class: "mono" }, id)])
    : ["idle"];
  const load = (w.load || [])[0];
  return el("tr", { dataset: { worker: w.name, state: w.state || "" } },
    cell("Worker", { class: "mono wide" }, w.name),
    cell("State", {}, el("span", { class: `status status-${w.state === "ready" ? "succeeded" : "queued"}` }, w.state || "?")),
    cell("Jobs / slots", { class: "num" }, `${w.running.length} / ${w.slots ?? "?"}`),
    cell("Running", {}, ...running),
    cell("Load", { class: "num", title: `load average over 1, 5, 15 min: ${(w.load || []).join(", ")}` },
      load === undefined ? "?" : `${load.toFixed(1)} on ${w.cores ?? "?"} cores`),
    cell("Calibrated", { title: w.calibrated_at ? `fingerprint ${w.fingerprint}` : "" }, ago(w.calibration_age_s)),
    cell("Heartbeat", { class: "num" }, `${w.heartbeat_age_s.toFixed(1)} s ago`),
    cell("Machine", { class: "wide", title: `${m.cpu || "?"}; fingerprint ${w.fingerprint}` },
      `nbdkit ${m.nbdkit || "?"} · kernel ${(m.kernel || "?").split("-")[0]}`),
    cell("Offers", { class: "wide", title: w.capabilities.join(", ") }, offers(w.capabilities)));
}

// The table is read every 2 s: only what changed is replaced, so a link under the pointer stays the same
// element while a run goes on (a row rebuilt between press and release would swallow the click).
function patch(body, rows) {
  const old = new Map([...body.children].map((tr) => [tr.dataset.worker, tr]));
  const next = rows.map((tr) => {
    const cur = old.get(tr.dataset.worker);
    if (!cur || cur.children.length !== tr.children.length) return tr;
    cur.dataset.state = tr.dataset.state;
    [...tr.children].forEach((td, i) => {
      if (cur.children[i].outerHTML !== td.outerHTML) cur.children[i].replaceWith(td);
    });
    return cur;
  });
  if (next.length !== body.children.length || next.some((tr, i) => body.children[i] !== tr)) body.replaceChildren(...next);
}

async function refresh() {
  let data;
  try {
    data = await request("GET", "/api/v1/workers");
  } catch (e) {
    $("workers-count").textContent = "not reachable";
    return;
  }
  patch($("workers-body"), data.workers.map(row));
  const n = data.workers.length;
  $("workers-count").textContent = `${n} ${n === 1 ? "worker" : "workers"}`;
  const empty = $("workers-empty");
  empty.hidden = n > 0;
  empty.textContent = data.cluster
    ? "No worker is connected: runs wait in the queue until one starts (lab worker --broker URL)."
    : "This lab carries every run out itself (no LAB_BROKER_URL): there are no workers.";
}

init();
refresh();
setInterval(refresh, EVERY_MS);
subscribe((kind) => { if (kind === "run" || kind === "done") refresh(); });
start({ history: false });
