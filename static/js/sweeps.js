// Saved sweeps (templates/partials/sweeps.html): the latest sweeps, each with a Re-run button.
// A re-run is POST /api/v1/sweeps/{id}/rerun with an Idempotency-Key, so a double click or a
// retried request queues one sweep, not two.

import { ApiError, isPresenter, request } from "./api.js";
import { $ } from "./format.js";

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
    const res = await fetch(`/api/v1/sweeps/${encodeURIComponent(sweep.id)}/rerun`, {
      method: "POST", headers: { Accept: "application/json", "Idempotency-Key": button.dataset.key, ...auth() },
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, (body && body.detail) || `answered ${res.status}`, null, body);
    status.textContent = `Queued ${body.name} again: ${body.total} runs (sweep ${body.id}).`;
    button.dataset.key = key();  // the next click is a new re-run
    await load();
  } catch (e) {
    status.textContent = `Could not re-run ${sweep.name}: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

function auth() {
  try {
    const t = sessionStorage.getItem("lab-token");
    return t ? { Authorization: `Bearer ${t}` } : {};
  } catch { return {}; }
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

async function load() {
  const body = $("sweeps-body");
  try {
    const page = await request("GET", `/api/v1/sweeps?limit=${LIMIT}`);
    body.replaceChildren(...(page.sweeps.length ? page.sweeps.map(row)
      : [Object.assign(document.createElement("tr"), { innerHTML: '<td colspan="7" class="hint">No sweeps yet.</td>' })]));
  } catch (e) {
    $("sweeps-status").textContent = `Sweeps unavailable: ${e.message}`;
  }
}

if ($("sweeps-body")) {
  load();
  setInterval(load, 5000);
}
