// The talk's summary: every act on one screen, a line per act, A above B on one time axis, the
// 2019 time marked where the talk measured one. The block-status act (its times are questions,
// not copies) is one sentence under the lines.

import * as f from "./format.js";
import { asksFirst, axisScale, laneName } from "./talklane.js";

const el = f.el;

function valueText(lane) {
  if (lane.state === "done") return f.seconds(lane.value) + (lane.run && lane.run.contended ? " ⚠" : "");
  if (lane.state === "running") return `${f.seconds(lane.value, 1)}…`;
  if (lane.state === "failed" || lane.state === "interrupted") return "failed";
  if (lane.state === "cancelled") return "cancelled";
  if (lane.state === "queued") return "queued";
  return "not run";
}

function bar(lane, end) {
  const { badge, text } = laneName(lane.row);
  const shown = ["done", "running", "failed"].includes(lane.state) ? lane.value : null;
  const fill = el("div", { class: "lane-fill" });
  fill.style.transform = `scaleX(${shown ? Math.min(1, shown / end).toFixed(4) : 0})`;
  const track = el("div", { class: "lane-track" }, fill);
  if (lane.ref) {
    const mark = el("div", { class: "mark mark-ref", title: `2019: ${f.seconds(lane.ref)}` });
    mark.style.transform = `translateX(${Math.min(100, (lane.ref / end) * 100).toFixed(3)}%)`;
    track.append(mark);
  }
  return el("div", { class: "sum-bar", dataset: { row: lane.row.key, state: lane.state } },
    el("span", { class: "sum-who", title: text }, el("span", { class: "lane-badge" }, badge || "–")),
    track, el("span", { class: "sum-value" }, valueText(lane)));
}

function asking(a, lanes) {
  const by = new Map();
  for (const l of lanes) {
    if (l.state !== "done" || l.part == null) continue;
    const where = l.row.label.split(",")[0];
    by.set(where, [...(by.get(where) || []), l.part]);
  }
  if (!by.size) return `${a.title.split(":")[0]}: not run yet.`;
  return `${a.title.split(":")[0]}: time spent asking BLOCK_STATUS as the disk grew 4×: ${[...by].map(([st, vs]) =>
    `${st} ${vs.map((v) => f.seconds(v)).join(" → ")}`).join("; ")}.`;
}

export function renderSummary(box, acts, lanesOf, actNumber) {
  const racing = acts.filter((a) => !asksFirst(a));
  const all = racing.map((a) => [a, lanesOf(a)]);
  const { end, step } = axisScale(all.flatMap(([, lanes]) => lanes));
  const lines = all.map(([a, lanes], i) => el("div", { class: "sum-act", dataset: { act: a.key } },
    el("div", { class: "sum-label" }, el("b", {}, `${actNumber(a, acts.indexOf(a))}. ${a.title.replace(/^\w+\.\s*/, "").split(":")[0]}`),
      el("span", {}, a.era)),
    el("div", { class: "sum-bars" }, lanes.map((l) => bar(l, end)))));
  const ticks = [];
  for (let v = 0; v <= end + 1e-9; v += step) {
    const t = el("div", { class: "tick" }, v / end < 0.96 ? el("span", {}, `${+v.toFixed(2)}`) : null);
    t.style.transform = `translateX(${((v / end) * 100).toFixed(3)}%)`;
    ticks.push(t);
  }
  const status = acts.filter(asksFirst).map((a) => el("p", { class: "sum-note" }, asking(a, lanesOf(a))));
  const key = [end, ...lines.map((l) => l.textContent + [...l.querySelectorAll(".lane-fill")].map((n) => n.style.transform).join()),
    ...status.map((s) => s.textContent)].join("|");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(el("div", { class: "summary" },
    el("p", { class: "sum-legend" }, el("span", { class: "lane-badge" }, "A"), "zeroing is metadata ",
      el("span", { class: "lane-badge" }, "B"), "zeroing falls back to writes ",
      el("span", { class: "lane-badge" }, "–"), "no write-zeroes ",
      el("span", { class: "sym-ref" }, "◆"), " the 2019 time"),
    ...lines,
    el("div", { class: "sum-act sum-axis" }, el("div", {}), el("div", { class: "sum-bars" },
      el("div", { class: "sum-bar" }, el("span", {}), el("div", { class: "axes" }, el("div", { class: "axis" }, ...ticks, el("span", { class: "axis-unit" }, "seconds"))), el("span", {})))),
    ...status));
}
