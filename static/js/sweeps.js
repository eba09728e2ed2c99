// Saved sweeps (templates/partials/sweeps.html): the latest sweeps, each with a Re-run button.
// A re-run is POST /api/v1/sweeps/{id}/rerun with an Idempotency-Key, so a double click or a
// retried request queues one sweep, not two. The list is read again when the event stream says a
// sweep changed (live.js: `sweep`, `sweep_done`) or the stream is back after a cut; never on a timer.

import { isPresenter, request } from "./api.js";
import { $ } from "./format.js";
import { onConnection, subscribe } from "./live.js";

const LIMIT = 10;

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "";
}

function key() {
  return (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random()}`;
}

async function rerun(sweep, button) {
  button.disabled = true;
  const status = $("sweeps-status");
  try {
    const body = await request("POST", `/api/v1/sweeps/${encodeURIComponent(sweep.id)}/rerun`, undefined,
      { headers: { "Idempotency-Key": button.dataset.key } });
    status.textContent = `Queued ${body.name} again: ${body.total} runs (sweep ${body.id}).`;
    button.dataset.key = key();  // the next click is a new re-run
    await load();
  } catch (e) {
    status.textContent = `Could not re-run ${sweep.name}: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

function row(sweep) {
  const tr = document.createElement("tr");
  tr.dataset.sweep = sweep.id;
  // rows without delays run at least 3 times whatever `repeats` says: the total is not rows x repeats
  const runs = sweep.repeats > 1 ? `${sweep.total} (×${sweep.repeats} per row)` : `${sweep.total}`;
  tr.append(cell(sweep.name), cell(sweep.kind || "scenario"), cell(sweep.status), cell(runs, "num"),
    cell(when(sweep.created_at)));
  const per = document.createElement("td");
  const a = document.createElement("a");
  a.href = `/api/v1/sweeps/${encodeURIComponent(sweep.id)}/results`;
  a.textContent = "median / spread";
  per.append(a);
  tr.append(per);
  const act = document.createElement("td");
  if (isPresenter()) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-small";
    b.textContent = "Re-run";
    b.dataset.key = key();
    b.setAttribute("aria-label", `Re-run ${sweep.name}`);
    b.addEventListener("click", () => rerun(sweep, b));
    act.append(b);
  }
  tr.append(act);
  return tr;
}

// Rows are kept while their sweep is unchanged: a re-read never swaps a button from under the pointer.
const shown = new Map(); // sweep id -> {sig, tr}

async function load() {
  const body = $("sweeps-body");
  try {
    const page = await request("GET", `/api/v1/sweeps?limit=${LIMIT}`);
    if (!page.sweeps.length) {
      shown.clear();
      body.replaceChildren(Object.assign(document.createElement("tr"),
        { innerHTML: '<td colspan="7" class="hint">No sweeps yet.</td>' }));
      return;
    }
    const rows = page.sweeps.map((sweep) => {
      const sig = JSON.stringify([sweep.status, sweep.total, sweep.name, sweep.kind, sweep.repeats, isPresenter()]);
      const had = shown.get(sweep.id);
      const tr = had && had.sig === sig ? had.tr : row(sweep);
      shown.set(sweep.id, { sig, tr });
      return tr;
    });
    const ids = new Set(page.sweeps.map((w) => w.id));
    for (const id of [...shown.keys()]) if (!ids.has(id)) shown.delete(id);
    if (rows.some((tr, i) => body.children[i] !== tr) || body.children.length !== rows.length) body.replaceChildren(...rows);
  } catch (e) {
    $("sweeps-status").textContent = `Sweeps unavailable: ${e.message}`;
  }
}

// Events come in bursts (a sweep's every run): one read for a burst.
let pending = null;
function soon() {
  if (pending === null) pending = setTimeout(() => { pending = null; load(); }, 300);
}

if ($("sweeps-body")) {
  load();
  subscribe((kind) => { if (kind === "sweep" || kind === "sweep_done") soon(); });
  let cut = false;
  onConnection((c) => {
    if (c.state === "live" && cut) soon();  // back after a cut: what changed meanwhile
    cut = c.state !== "live" && c.state !== "connecting";
  });
}
