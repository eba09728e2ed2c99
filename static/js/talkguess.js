// Before each act of the talk, a student guesses the copy time of each of its rows (server A, B);
// one guess per row (a new one replaces it), closed once the act has started; after the act has run,
// their guess is shown beside the measurement and the model. The rules are the service's
// (lab/service/classroom.py): this form says what they are.
import { config, request } from "./api.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { canGuess, studentName, submitGuess } from "./student.js";

let acts = [];
let current = null;

function actOnScreen() {
  const dots = [...document.querySelectorAll("#act-dots button")];
  const i = dots.findIndex((b) => b.getAttribute("aria-current") === "step");
  return i >= 0 && i < acts.length ? acts[i] : null;
}

// "Server A", or "A 32.0 MiB" where an act has several rows per server (the block-status act).
function rowName(row, rows) {
  if (!row.group) return "Time";
  const same = rows.filter((r) => r.group === row.group).length > 1;
  return same && row.spec && row.spec.size ? `${row.group} ${f.bytes(row.spec.size)}` : `Server ${row.group}`;
}

function inputs() { return [...document.querySelectorAll("#talk-guess-fields input")]; }

async function showResult() {
  if (!current) return;
  const state = $("talk-guess-state");
  const send = $("talk-guess-send");
  if (!canGuess() || !studentName()) {
    for (const i of inputs()) i.disabled = true;
    send.disabled = true;
    state.textContent = config.auth_required ? "Join the class (name and code, at the top) to guess."
      : "Type your name at the top to guess.";
    return;
  }
  const name = studentName();
  const [{ guesses }, { acts: view }] = await Promise.all([
    request("GET", `/api/v1/guesses?student=${encodeURIComponent(name)}`), request("GET", "/api/v1/class/acts")]);
  const act = view.find((a) => a.key === current.key);
  if (!act || !current) return;
  const locked = act.state.locked;
  for (const i of inputs()) i.disabled = locked;
  send.disabled = locked;
  const parts = [];
  for (const row of act.rows) {
    const mine = guesses.filter((g) => g.target === row.key && g.prediction).pop();
    const input = $(`talk-guess-${row.key}`);
    if (input) input.placeholder = mine ? `yours: ${mine.prediction.duration_s}` : "";
    if (!mine) continue;
    const m = row.measured;
    parts.push(`${rowName(row, current.rows)}: you ${f.seconds(mine.prediction.duration_s)}` +
      (m && act.state.revealed ? `, measured ${f.seconds(m.duration_s)}, model ${f.seconds(m.predicted_s)}` : ""));
  }
  const rule = locked ? (act.state.revealed ? "" : "Guesses closed: the act has started.")
    : parts.length ? "Sent. A new guess replaces yours until the act starts." : "";
  state.textContent = [parts.join(" · "), rule].filter(Boolean).join(" — ");
}

function render() {
  const act = actOnScreen();
  const form = $("talk-guess");
  if (!act) { form.hidden = true; current = null; return; }  // the summary: nothing to guess
  if (current && act.key === current.key) return;
  current = act;
  const box = $("talk-guess-fields");
  box.replaceChildren();
  const rows = act.rows.filter((r) => r.available !== false); // nothing to guess where nothing runs
  for (const row of rows) {
    const input = f.el("input", { type: "number", min: "0", step: "0.1", inputmode: "decimal",
      id: `talk-guess-${row.key}`, "data-row": row.key });
    box.append(f.el("label", {}, `${rowName(row, rows)}, s`, input));
  }
  form.hidden = rows.length === 0;
  $("talk-guess-state").textContent = "";
  showResult().catch(() => {});
}

async function send(e) {
  e.preventDefault();
  if (!canGuess() || !studentName()) { showResult().catch(() => {}); return; }
  const filled = inputs().filter((i) => i.value.trim() !== "");
  try {
    for (const input of filled) await submitGuess(input.dataset.row, { duration_s: Number(input.value) });
    for (const input of filled) input.value = "";
    await showResult();
  } catch (err) {
    $("talk-guess-state").textContent = err.message;
  }
}

async function main() {
  const scenario = await request("GET", "/api/v1/scenarios/acts");
  acts = scenario.acts || [];
  $("talk-guess").addEventListener("submit", send);
  new MutationObserver(render).observe($("act-dots"), { subtree: true, attributes: true, childList: true });
  document.addEventListener("lab-student", () => showResult().catch(() => {}));
  document.addEventListener("lab-student-key", () => showResult().catch(() => {}));
  render();
  setInterval(() => showResult().catch(() => {}), 4000);
}

main().catch(() => {});
