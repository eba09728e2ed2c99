// The fast-zero probe panel: POST /api/v1/probes with the form's server kind and storage.

import { request } from "./api.js";
import { BACKEND_FIELDS, formServer } from "./fields.js";
import { $, el } from "./format.js";

const LENGTH = "16M"; // per range; 4 ranges: small enough for a live demo

// What sits under the filter stack, as chosen in the form (the probe's own defaults do the rest).
function serverFields() {
  return formServer($("run-form"), BACKEND_FIELDS);
}

function cell(v) { return el("td", {}, v); }

function render(p) {
  const v = $("probe-verdict");
  v.replaceChildren(el("b", {}, p.verdict), ` — ${p.why}`,
    ...(p.problems || []).map((x) => el("span", { class: "error-text" }, ` ${x}.`)));
  v.hidden = false;
  $("probe-rows").replaceChildren(...p.results.map((s) => el("tr", {},
    cell(s.range), cell(s.op), cell(s.error ? `${s.outcome} (${s.error})` : s.outcome),
    cell(s.ms === null || s.ms === undefined ? "–" : `${s.ms.toFixed(1)} ms`),
    cell(s.reads_zero === null || s.reads_zero === undefined ? "–" : s.reads_zero ? "✓" : "✗"))));
  $("probe-table").hidden = false;
}

async function runProbe() {
  const btn = $("probe-btn");
  const v = $("probe-verdict");
  btn.disabled = true;
  v.hidden = false;
  v.textContent = "probing…";
  $("probe-table").hidden = true;
  try {
    render(await request("POST", "/api/v1/probes", { server: serverFields(), length: LENGTH }));
  } catch (err) {
    v.textContent = `cannot probe: ${err.message}`;
  } finally {
    btn.disabled = false;
  }
}

if ($("probe-btn")) $("probe-btn").addEventListener("click", runProbe);
