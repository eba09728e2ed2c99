// Before each act of the talk, a student guesses the copy time of each of its rows (server A, B);
// after the act has run, their guess is shown beside the measurement and the model.
import { request } from "./api.js";
import { $ } from "./format.js";
import * as f from "./format.js";
import { studentName, submitGuess } from "./student.js";

let acts = [];
let current = null;

function actOnScreen() {
  const dots = [...document.querySelectorAll("#act-dots button")];
  const i = dots.findIndex((b) => b.getAttribute("aria-current") === "step");
  return i >= 0 && i < acts.length ? acts[i] : null;
}

function rowName(row) { return row.group ? `Server ${row.group}` : "Time"; }

async function showResult() {
  if (!current) return;
  const name = studentName();
  const state = $("talk-guess-state");
  if (!name) { state.textContent = "Type your name at the top to guess."; return; }
  const [{ guesses }, { acts: view }] = await Promise.all([
    request("GET", `/api/v1/guesses?student=${encodeURIComponent(name)}`), request("GET", "/api/v1/class/acts")]);
  const act = view.find((a) => a.key === current.key);
  const parts = [];
  for (const row of act ? act.rows : []) {
    const mine = guesses.filter((g) => g.target === row.key).pop();
    if (!mine) continue;
    const m = row.measured;
    parts.push(`${rowName(row)}: you ${f.seconds(mine.prediction.duration_s)}` +
      (m ? `, measured ${f.seconds(m.duration_s)}, model ${f.seconds(m.predicted_s)}` : ", not run yet"));
  }
  state.textContent = parts.join(" · ");
}

function render() {
  const act = actOnScreen();
  const form = $("talk-guess");
  if (!act) { form.hidden = true; current = null; return; }  // the summary: nothing to guess
  if (current && act.key === current.key) return;
  current = act;
  const box = $("talk-guess-fields");
  box.replaceChildren();
  for (const row of act.rows.filter((r) => r.available !== false)) { // nothing to guess where nothing runs
    const input = f.el("input", { type: "number", min: "0", step: "0.1", inputmode: "decimal",
      id: `talk-guess-${row.key}`, "data-row": row.key });
    box.append(f.el("label", {}, `${rowName(row)}, s`, input));
  }
  form.hidden = false;
  $("talk-guess-state").textContent = "";
  showResult().catch(() => {});
}

async function send(e) {
  e.preventDefault();
  if (!studentName()) { $("talk-guess-state").textContent = "Type your name at the top first."; return; }
  const inputs = [...document.querySelectorAll("#talk-guess-fields input")].filter((i) => i.value.trim() !== "");
  try {
    for (const input of inputs) await submitGuess(input.dataset.row, { duration_s: Number(input.value) });
    for (const input of inputs) input.value = "";
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
  render();
  setInterval(() => showResult().catch(() => {}), 4000);
}

main().catch(() => {});
