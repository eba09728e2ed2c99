// A student's name (typed once, remembered in this browser) and guesses before a run.
// Loaded on every page: it adds `student` (and, on the lab page, `prediction`) to the runs
// and sweeps this browser starts, and fills the "My runs" card (guess beside result and model).
// With LAB_TOKEN set (a class), the name is joined with the teacher's code: the key it gets names
// the student on every request (api.js); without one (an open lab) the typed name is sent.
import { api, config, request, setStudentKey, studentKey } from "./api.js";
import { $ } from "./format.js";
import * as f from "./format.js";

const KEY = "lab-student";
const FIELDS = ["duration_s", "write_ops", "zero_ops"];

export function studentName() {
  try { return localStorage.getItem(KEY) || ""; } catch { return ""; }
}

function setStudentName(name) {
  const clean = name.split(/\s+/).filter(Boolean).join(" ").slice(0, 40);
  try {
    if (clean) localStorage.setItem(KEY, clean); else localStorage.removeItem(KEY);
  } catch { /* private mode: the name lasts for this page only */ }
  document.dispatchEvent(new CustomEvent("lab-student", { detail: clean }));
  return clean;
}

// The guess typed in the lab form, or null when every box is empty.
function guess() {
  const out = {};
  for (const k of FIELDS) {
    const input = $(`guess-${k}`);
    if (!input || input.value.trim() === "") continue;
    out[k] = Number(input.value);
  }
  return Object.keys(out).length ? out : null;
}

function clearGuess() {
  for (const k of FIELDS) { const input = $(`guess-${k}`); if (input) input.value = ""; }
}

// Every run or sweep this browser starts carries the name; a run carries the guess too.
const startRun = api.startRun;
api.startRun = async (body) => {
  const name = studentName();
  const g = $("guess-box") ? guess() : null;
  const run = await startRun({ ...body, ...(name ? { student: name } : {}), ...(g ? { prediction: g } : {}) });
  if (g) clearGuess();
  refreshMine();
  return run;
};
const startScenario = api.startScenario;
api.startScenario = (scenario, body) => {
  const name = studentName();
  return startScenario(scenario, name ? { ...(body || {}), student: name } : body);
};

// -- the name box in the top bar: a name (open lab) or a name and the join code (a class) --------
const joining = () => Boolean(config.auth_required);

function initNameBox() {
  const form = $("student-form");
  if (!form) return;
  const input = $("student-name");
  const code = $("student-code");
  const shown = $("student-shown");
  const state = $("student-state");
  form.dataset.join = joining() ? "true" : "false";
  $("student-save").textContent = joining() ? "Join" : "Save";
  const opener = $("student-open");
  opener.textContent = joining() ? "Join the class" : "Your name";
  opener.addEventListener("click", () => {
    const open = form.dataset.open !== "true";
    form.dataset.open = open ? "true" : "false";
    opener.setAttribute("aria-expanded", String(open));
    if (open) input.focus();
  });
  if (code) code.hidden = !joining();
  const show = () => {
    const name = studentName();
    const named = Boolean(name) && (!joining() || Boolean(studentKey()));
    if (named) form.dataset.open = "false";
    input.value = name;
    shown.textContent = named ? name : "";
    form.dataset.named = named ? "true" : "false";
    document.body.classList.toggle("student", joining() && Boolean(studentKey()));
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!joining()) { setStudentName(input.value); show(); input.blur(); return; }
    state.textContent = "";
    try {
      const joined = await request("POST", "/api/v1/class/join", { code: code.value.trim(), name: input.value });
      setStudentName(joined.student); // the name first: the key's event asks for the student's guesses by name
      setStudentKey(joined.key);
      code.value = "";
      input.blur();
    } catch (err) {
      state.textContent = err.message;
    }
    show();
  });
  $("student-edit").addEventListener("click", () => {
    if (joining()) { setStudentKey(""); setStudentName(""); } // leave: join again, maybe as someone else
    form.dataset.named = "false";
    show();
    input.focus();
    input.select();
  });
  document.addEventListener("lab-student-key", show); // a refused key (a new session) asks to join again
  show();
}

// -- "My runs": guess beside measurement and model ----------------------------------------------
let scope = "mine";
let timer = null;

function cellTriple(guessV, measured, model, fmt) {
  const td = f.el("td", { class: "guess-cell" });
  const g = guessV === undefined ? "–" : fmt(guessV);
  td.append(f.el("span", { class: "g-guess", title: "your guess" }, g), " · ",
            f.el("strong", { class: "g-measured", title: "measured" }, measured == null ? "…" : fmt(measured)));
  if (model != null) td.append(" · ", f.el("span", { class: "g-model", title: "model" }, fmt(model)));
  return td;
}

function renderMine(runs) {
  const body = $("mine-rows");
  if (!body) return;
  body.replaceChildren();
  for (const r of runs) {
    const p = r.prediction || {};
    const b = r.backend || {};
    const ref = r.reference || {};
    const tr = f.el("tr", { "data-run": r.id, "data-status": r.status });
    tr.append(
      f.el("td", {}, f.clock(r.created_at)),
      f.el("td", {}, scope === "class" ? (r.student || "–") : r.client),
      f.el("td", { class: `status status-${r.status}` }, r.status),
      cellTriple(p.duration_s, r.duration_s, r.predicted_s, (v) => f.seconds(v)),
      cellTriple(p.write_ops, b.write_ops, ref.write_ops, String),
      cellTriple(p.zero_ops, b.zero_ops, ref.zero_ops, String),
    );
    body.append(tr);
  }
  $("mine-empty").hidden = runs.length > 0;
  $("mine-empty").textContent = scope === "mine" && !studentName()
    ? "Type your name at the top to see your own runs here." : "No runs yet.";
}

export async function refreshMine() {
  if (!$("mine-rows")) return;
  clearTimeout(timer);
  const name = studentName();
  let runs = [];
  if (scope === "class") {
    runs = (await api.runs("?limit=30")).filter((r) => r.student);
  } else if (name) {
    runs = await api.runs(`?student=${encodeURIComponent(name)}&limit=30`);
  }
  renderMine(runs);
  const busy = runs.some((r) => r.status === "queued" || r.status === "running");
  timer = setTimeout(() => refreshMine().catch(() => {}), busy ? 1000 : 5000);
}

function initMine() {
  if (!$("mine-rows")) return;
  for (const b of document.querySelectorAll("[data-mine-scope]")) {
    b.addEventListener("click", () => {
      scope = b.dataset.mineScope;
      for (const o of document.querySelectorAll("[data-mine-scope]")) o.setAttribute("aria-pressed", String(o === b));
      refreshMine().catch(() => {});
    });
  }
  document.addEventListener("lab-student", () => refreshMine().catch(() => {}));
  refreshMine().catch(() => {});
}

export async function submitGuess(target, prediction) {
  // a joined student's key names them; in an open lab the typed name does
  return request("POST", "/api/v1/guesses", studentKey() ? { target, prediction } : { student: studentName(), target, prediction });
}

// Who this browser guesses as: a name (open lab) or a joined student (a class).
export function canGuess() {
  return joining() ? Boolean(studentKey()) : Boolean(studentName());
}

initNameBox();
initMine();
