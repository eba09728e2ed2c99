// The zero audit page (/audits): start one, follow the list, read one, compare several.
import { request } from "./api.js";
import { init } from "./common.js";
import { $, el } from "./format.js";
import { start as startLive } from "./live.js";

const SIZES = { quick: null, full: null, edges: ["64M", "64M+4K", "128M"] };
const FLAGS = ["none", "no-hole", "fast-zero", "no-hole+fast-zero"];
const selected = new Set();
let shown = null;
let timer = null;

function body() {
  const kind = $("a-kind").value;
  const server = { kind };
  if (kind === "nbdkit") server.plugin = $("a-plugin").value;
  if (kind !== "external" && !(kind === "nbdkit" && server.plugin === "memory")) server.storage = $("a-storage").value;
  if (kind === "qemu-nbd") server.disk_format = $("a-format").value;
  if (kind === "external") { server.target = $("a-target").value.trim(); server.destructive = $("a-destructive").checked; }
  const sizes = $("a-sizes").value;
  const out = { server, inflight: Number($("a-inflight").value) || 1 };
  if (sizes === "quick") out.quick = true;
  else if (SIZES[sizes]) out.sizes = SIZES[sizes];
  return out;
}

function showFields() {
  const kind = $("a-kind").value;
  const memory = kind === "nbdkit" && $("a-plugin").value === "memory";
  for (const label of document.querySelectorAll("#audit-form [data-for]")) {
    const want = label.dataset.for;
    label.hidden = want === "disk" ? kind === "external" || memory : want !== kind;
  }
}

async function loadStorages() {
  const kinds = await request("GET", "/api/v1/kinds");
  const pick = $("a-storage");
  pick.replaceChildren(...Object.entries(kinds.storages).map(([name, a]) =>
    el("option", { value: name, disabled: !a.available, title: a.reason || "" }, a.available ? name : `${name} (not here)`)));
  const first = [...pick.options].find((o) => !o.disabled && o.value === "tmpfs") || [...pick.options].find((o) => !o.disabled);
  if (first) pick.value = first.value;
}

function verdictClass(a) {
  if (!a.verdict) return "";
  if (a.verdict === "unsafe") return "bad";
  return ["fast", "refused-quickly", "not-advertised-cheap"].includes(a.verdict) ? "ok" : "warn";
}

function status(a) {
  if (a.status === "running" && a.progress) return `running ${a.progress.done + 1}/${a.progress.total}`;
  return a.status;
}

function row(a) {
  const box = el("input", { type: "checkbox", "aria-label": `Select ${a.label} to compare`, checked: selected.has(a.id),
    disabled: !a.verdict, onchange: (e) => { e.target.checked ? selected.add(a.id) : selected.delete(a.id); compareLink(); } });
  const open = el("button", { type: "button", class: "link-btn", onclick: () => show(a.id) }, a.label || a.id);
  const actions = a.verdict ? [el("a", { href: `/api/v1/audits/${a.id}/report.html`, target: "_blank", rel: "noopener" }, "HTML"),
    " · ", el("a", { href: `/api/v1/audits/${a.id}` }, "JSON")]
    : ["queued", "running"].includes(a.status) ? [el("button", { type: "button", class: "btn presenter-only",
      onclick: () => cancel(a.id) }, "Cancel")] : [a.error || ""];
  return el("tr", { "data-audit": a.id }, el("td", {}, box), el("td", {}, open), el("td", {}, status(a)),
    el("td", {}, el("span", { class: `verdict-pill ${verdictClass(a)}` }, a.verdict || "–")), el("td", {}, ...actions));
}

function compareLink() {
  const link = $("audit-compare");
  const ok = selected.size >= 1;
  link.setAttribute("aria-disabled", String(!ok));
  link.href = ok ? `/api/v1/audits/report.html?ids=${[...selected].join(",")}` : "#";
}

async function refresh() {
  clearTimeout(timer);
  let list = [];
  try {
    list = (await request("GET", "/api/v1/audits")).audits;
  } catch (err) {
    $("audit-error").textContent = err.message;
  }
  $("audit-rows").replaceChildren(...list.map(row));
  $("audit-empty").hidden = list.length > 0;
  const live = list.some((a) => ["queued", "running"].includes(a.status));
  if (shown && list.some((a) => a.id === shown && a.verdict)) await show(shown, false);
  timer = setTimeout(refresh, live ? 1500 : 10000);
}

function matrix(a) {
  const rows = new Map();
  for (const c of a.cells) {
    const key = `${c.size_text}${c.inflight > 1 ? ` ×${c.inflight}` : ""} ${c.disk}`;
    if (!rows.has(key)) rows.set(key, {});
    const cell = rows.get(key)[c.flags] || (rows.get(key)[c.flags] = []);
    cell.push(c);
  }
  const head = el("tr", {}, el("th", { scope: "col" }, "request, disk"), ...FLAGS.map((f) => el("th", { scope: "col" }, f)));
  const body = [...rows].map(([key, by]) => el("tr", {}, el("th", { scope: "row" }, key), ...FLAGS.map((f) => {
    const cs = by[f] || [];
    const bad = cs.some((c) => c.unsafe);
    const words = cs.map((c) => c.unsafe ? "STALE" : c.outcome === "ok" ? `ok ${(c.cost || {}).class || ""}` : c.outcome);
    const text = [...new Set(words)].join(" / ") || "–";
    const tone = bad ? "bad" : words.some((w) => w === "ok dear") ? "warn" : words.some((w) => w.startsWith("ok")) ? "ok" : "";
    return el("td", { class: tone, title: cs.map((c) => `${c.position}: ${(c.cost || {}).basis || c.why || c.outcome}`).join("\n") }, text);
  })));
  return [el("thead", {}, head), el("tbody", {}, ...body)];
}

async function show(id, scroll = true) {
  shown = id;
  const a = await request("GET", `/api/v1/audits/${encodeURIComponent(id)}`);
  $("audit-detail").hidden = false;
  $("audit-detail-title").textContent = a.label || id;
  const v = $("audit-verdict");
  v.textContent = a.verdict ? a.verdict : status(a);
  v.className = `audit-verdict ${verdictClass(a)}`;
  $("audit-why").textContent = a.why || (a.progress ? `now: ${a.progress.current}` : "");
  const store = a.server && typeof a.server.storage === "object" ? a.server.storage : null;
  $("audit-caps").textContent = [a.server && a.server.version, store && store.capabilities && store.capabilities.line]
    .filter(Boolean).join(" · ");
  $("audit-matrix").replaceChildren(...(a.cells ? matrix(a) : []));
  $("audit-repro").replaceChildren(...(a.reproducers || []).slice(0, 1).map((r) => el("div", {},
    el("h3", {}, `Reproducer: ${r.request} (${r.position})`),
    el("p", { class: "hint" }, "Paste as root: it builds the storage, starts the server, sends the request, reads it back and exits 1 while the bug is there."),
    el("pre", { class: "repro", tabindex: "0" }, r.script))));
  if (scroll) $("audit-detail").scrollIntoView({ block: "nearest" });
}

async function cancel(id) {
  try { await request("POST", `/api/v1/audits/${encodeURIComponent(id)}/cancel`); } catch (err) { $("audit-error").textContent = err.message; }
  refresh();
}

async function start(e) {
  e.preventDefault();
  $("audit-error").textContent = "";
  $("audit-start").disabled = true;
  try {
    const a = await request("POST", "/api/v1/audits", body());
    await refresh();
    show(a.id);
  } catch (err) {
    $("audit-error").textContent = err.message;
  } finally {
    $("audit-start").disabled = false;
  }
}

init();
startLive(); // the connection pill: audits themselves are polled (they are jobs, not runs on the event stream)
$("audit-form").addEventListener("submit", start);
$("a-kind").addEventListener("change", showFields);
$("a-plugin").addEventListener("change", showFields);
showFields();
loadStorages().catch((err) => { $("audit-error").textContent = err.message; });
refresh();
