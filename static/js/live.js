// What the page knows about runs, kept current by the REST API and the event stream.
//
// History comes from GET /api/v1/runs one page at a time (more on demand), or, on the talk
// and case-study pages, from GET /api/v1/scenarios/{name}/rows (only the runs their rows
// need). Live detail comes from /api/v1/events. A reconnect resumes after the last event
// this page applied; the history is read again only when the service lost that point
// (a new data dir).

import { api, unwrapList } from "./api.js";
import { FINAL } from "./vocabulary.js";

export { FINAL };

export const PAGE = 100; // runs per history page

export const store = {
  runs: new Map(),      // id -> run, as Run.to_dict()
  progress: new Map(),  // id -> last progress event, plus receivedAt (ms); kept for a run that stopped early
  phase: new Map(),     // id -> "setup" | "copy" | "verify"
  cells: new Map(),     // id -> {cells (run-length encoded), cell_size}: the live disk map
  series: new Map(),    // id -> [{t, w, z}] cumulative backend writes/zeroes over copy time
  waiting: new Map(),   // id -> {queue_position, estimated_start_s, at (ms)}: a queued run's place (GET /api/v1/queue)
  talk: null,           // {act, at}: the act the presenter shows (the talk's audience follows it)
  total: null,          // runs the service has (from the last page read)
  nextCursor: null,     // where the next history page starts
  pages: 0,             // history pages read
  loaded: false,
  history: true,        // this page reads the history (the talk does not)
  fetches: { list: 0, run: 0, rows: 0 }, // REST reads, by kind (the tests count them)
  seen: { state: 0, progress: 0, done: 0, other: 0 }, // events applied, by type
};
// For a look from the browser console (and the browser tests).
window.lab = { store };

const subscribers = new Set();
export function subscribe(fn) { subscribers.add(fn); return () => subscribers.delete(fn); }
function notify(kind, id = null) { for (const fn of subscribers) fn(kind, id); }

const connSubscribers = new Set();
export function onConnection(fn) { connSubscribers.add(fn); fn(conn); }
let conn = { state: "connecting", since: Date.now(), attempts: 0 };
function setConn(state) {
  if (conn.state === state) return;
  conn = { state, since: Date.now(), attempts: state === "live" ? 0 : conn.attempts + 1 };
  for (const fn of connSubscribers) fn(conn);
}

export function runs() {
  return [...store.runs.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
}

// A run never goes back from a final status: replayed or late events must not undo a result.
export function upsertRun(run) {
  if (!run || !run.id) return;
  const old = store.runs.get(run.id);
  if (old && FINAL.has(old.status) && !FINAL.has(run.status)) return;
  store.runs.set(run.id, old ? { ...old, ...run } : run);
  takeWaiting(run.id, run);
  if (!old && store.total !== null) store.total += 1; // a new run: one more in the service's history
  notify(old ? "run" : "new", run.id);
}

// How long a clock may run on past the last progress event: a run that sends nothing for longer
// (a stalled copy, a lost connection) shows the time it was last heard of, never a made-up one.
export const EXTRAPOLATE_S = 2;

// Elapsed copy time now, extrapolated from the last progress event between events, only while the
// event stream is live and for at most EXTRAPOLATE_S.
export function liveElapsed(id) {
  const p = store.progress.get(id);
  if (!p) return null;
  const run = store.runs.get(id);
  if (run && FINAL.has(run.status)) return p.elapsed_s;
  if (store.phase.get(id) === "verify" || conn.state !== "live") return p.elapsed_s;
  return p.elapsed_s + Math.min(EXTRAPOLATE_S, (performance.now() - p.receivedAt) / 1000);
}

// A queued run's place and estimate change whenever the queue moves: read GET /api/v1/queue again
// after the events that move it (a run queued, started or ended), at most once a second, and only
// while this page shows a queued run. No polling: a quiet queue is read once.
let queueTimer = null;
let queueReadAt = 0;
function takeWaiting(id, w) {
  if (w && w.queue_position != null) store.waiting.set(id, { ...w, at: Date.now() });
}
function queueMoved() {
  if (queueTimer) return;
  const anyQueued = [...store.runs.values()].some((r) => r.status === "queued");
  if (!anyQueued) { store.waiting.clear(); return; }
  queueTimer = setTimeout(readQueue, Math.max(0, 1000 - (Date.now() - queueReadAt)));
}
async function readQueue() {
  queueReadAt = Date.now();
  try {
    const q = await api.queue();
    store.waiting.clear();
    for (const w of q.runs || []) takeWaiting(w.id, w);
    notify("queue");
  } catch { /* the next move reads it again */ } finally { queueTimer = null; }
}

const fetching = new Map();
function fetchRun(id) {
  if (fetching.has(id)) return;
  store.fetches.run += 1;
  const p = api.run(id).then(upsertRun).catch(() => {}).finally(() => fetching.delete(id));
  fetching.set(id, p);
}

function handle(ev) {
  if (!ev || typeof ev !== "object") return;
  store.seen[ev.type in store.seen ? ev.type : "other"] += 1;
  const id = ev.run_id || (ev.run && ev.run.id);
  switch (ev.type) {
    case "state": {
      // A run's last state (succeeded, failed, ...) comes without its row; the `done` event right
      // after it carries the row (time, counts, verified): show the end once, with everything.
      if (FINAL.has(ev.status) && !(ev.run && typeof ev.run === "object")) return;
      const run = store.runs.get(id);
      if (!run) { fetchRun(id); queueMoved(); return; }
      if (ev.phase) store.phase.set(id, ev.phase);
      if (ev.status && !(FINAL.has(run.status) && !FINAL.has(ev.status))) {
        run.status = ev.status;
        if (ev.status === "running" && !run.started_at) run.started_at = Date.now() / 1000;
      }
      if (ev.status === "queued" || ev.phase === "setup") queueMoved(); // queued, or one left the queue
      if (ev.run && typeof ev.run === "object") { upsertRun(ev.run); return; }
      notify("run", id);
      return;
    }
    case "progress": {
      const run = store.runs.get(id);
      if (run && FINAL.has(run.status)) return; // replayed history of a finished run
      store.progress.set(id, { ...ev, receivedAt: performance.now() });
      if (ev.cells) store.cells.set(id, { cells: ev.cells, under: ev.under, marks: ev.marks, cell_size: ev.cell_size });
      if (ev.backend) {
        const list = store.series.get(id) || [];
        if (list.length < 5000) list.push({ t: ev.elapsed_s, w: ev.backend.write_ops || 0, z: ev.backend.zero_ops || 0 });
        store.series.set(id, list);
      }
      if (ev.client && ev.client.phase) store.phase.set(id, ev.client.phase === "pre-zero" ? "pre-zero" : "copy");
      if (!run) fetchRun(id);
      else {
        store.phase.set(id, store.phase.get(id) || "copy");
        notify("progress", id);
      }
      return;
    }
    case "done": {
      const result = ev.run && typeof ev.run === "object" ? ev.run : ev.result && typeof ev.result === "object" ? ev.result : ev;
      if (result.client) upsertRun({ ...result, id: result.id || id });
      else fetchRun(id);
      if (result.status === "succeeded") store.progress.delete(id);
      store.phase.delete(id);
      store.waiting.delete(id);
      queueMoved();
      notify("done", id);
      return;
    }
    case "talk": // the act the presenter shows (PUT /api/v1/talk)
      store.talk = { act: ev.act, at: ev.at };
      notify("talk");
      return;
    default:
      // queued / created / sweep events: anything carrying a run is taken as is.
      if (ev.run && typeof ev.run === "object" && ev.run.client) upsertRun(ev.run);
      else if (id && !store.runs.has(id)) fetchRun(id);
      notify(ev.type || "event", id);
  }
}

let lastEventId = null; // the newest event this page has applied

function takeList(list) {
  for (const run of list) {
    const old = store.runs.get(run.id);
    if (old && FINAL.has(old.status) && !FINAL.has(run.status)) continue;
    store.runs.set(run.id, old ? { ...old, ...run } : run);
    if (FINAL.has(run.status)) store.phase.delete(run.id);
    takeWaiting(run.id, run);
  }
}

function takeLastEventId(data) {
  if (lastEventId === null && data && Number.isInteger(data.last_event_id)) lastEventId = data.last_event_id;
}

// One read of what the page shows: true when it all came in (the page is loaded), false on
// any failure (the caller tries again).
async function synced(read) {
  try {
    await read();
    store.loaded = true;
    notify("sync");
    return true;
  } catch {
    return false;
  }
}

// The first page of the history (the newest PAGE runs), replacing what the page had.
export async function resync() {
  if (!store.history) return syncRows();
  return synced(async () => {
    store.fetches.list += 1;
    const data = await api.runList(`?limit=${PAGE}`);
    const list = unwrapList(data, "runs");
    const fresh = new Set(list.map((r) => r.id));
    // Drop what the service no longer has (a new data dir), but not a run announced by the
    // stream after this list was read, nor an older page's run.
    const oldest = list.length ? Math.min(...list.map((r) => r.created_at || 0)) : Infinity;
    for (const [id, run] of store.runs) {
      if (!fresh.has(id) && (run.created_at || 0) >= oldest && FINAL.has(run.status)) store.runs.delete(id);
      if (!list.length && FINAL.has(run.status)) store.runs.delete(id);
    }
    takeList(list);
    store.total = Number.isInteger(data && data.total) ? data.total : list.length;
    store.nextCursor = (data && data.next_cursor) || null;
    store.pages = 1;
    takeLastEventId(data);
  });
}

// The next page of older runs (the service's cursor: new runs meanwhile shift nothing); how many came.
export async function loadMore() {
  if (!store.nextCursor) return 0;
  store.fetches.list += 1;
  const data = await api.runList(`?limit=${PAGE}&cursor=${encodeURIComponent(store.nextCursor)}`);
  const list = unwrapList(data, "runs");
  takeList(list);
  store.nextCursor = (data && data.next_cursor) || null;
  store.pages += 1;
  notify("page");
  return list.length;
}

// Pages that show a scenario read only its rows' runs (GET /api/v1/scenarios/{name}/rows).
let rowsSources = [];
let started = false;
export function watchScenario(name, perRow = 3) {
  rowsSources = rowsSources.filter((s) => s.name !== name);
  rowsSources.push({ name, perRow });
  if (started) syncRows();
}

function syncRows() {
  return synced(async () => {
    for (const { name, perRow } of rowsSources) {
      store.fetches.rows += 1;
      const data = await api.scenarioRows(name, perRow);
      for (const row of data.rows || []) takeList(row.runs || []);
      takeLastEventId(data);
    }
  });
}

// Back after a cut: resume after the last event when the service still has it, else read again.
async function afterReconnect() {
  try {
    const h = await api.health();
    const last = h && Number.isInteger(h.last_event_id) ? h.last_event_id
      : h && h.manager && Number.isInteger(h.manager.last_event_id) ? h.manager.last_event_id : null;
    if (last !== null && lastEventId !== null && last >= lastEventId) return; // nothing lost: the stream resumes
  } catch { /* read again below */ }
  lastEventId = null;
  await resync();
  connect();
}

const EVENT_NAMES = ["message", "state", "progress", "done", "sweep", "sweep_done", "server", "talk"];
let source = null;
let retryTimer = null;
let everOpened = false;
let lostSince = null;

// The history read by resync() ends at last_event_id: the stream starts right after it,
// so nothing falls between the two. The browser resumes by itself with Last-Event-ID.
export function connect() {
  if (source) source.close();
  clearTimeout(retryTimer);
  const url = lastEventId === null ? "/api/v1/events" : `/api/v1/events?last_event_id=${lastEventId}`;
  source = new EventSource(url);
  const onData = (msg) => {
    let data;
    try { data = JSON.parse(msg.data); } catch { return; }
    if (data && !data.type && msg.type !== "message") data.type = msg.type;
    const id = parseInt(msg.lastEventId, 10);
    if (Number.isInteger(id)) lastEventId = id;
    handle(data);
  };
  for (const name of EVENT_NAMES) source.addEventListener(name, onData);
  source.onopen = () => {
    const wasLost = lostSince !== null;
    everOpened = true;
    lostSince = null;
    setConn("live");
    // Back after a cut: the stream resumed after our last event (a restarted service
    // replays its "interrupted" runs); read again only if the service lost that point.
    if (wasLost) afterReconnect();
  };
  source.onerror = () => {
    if (lostSince === null) lostSince = Date.now();
    setConn(everOpened ? "reconnecting" : "connecting");
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (an HTTP error rather than a dropped connection): retry ourselves.
      const wait = Math.min(5000, 1000 * Math.max(1, conn.attempts));
      retryTimer = setTimeout(connect, wait);
    }
  };
}

export function connection() { return conn; }

export async function start({ history = true } = {}) {
  store.history = history;
  started = true;
  // Until the service answers, keep trying: the page may be opened before the lab is up.
  while (!(await resync())) {
    setConn("reconnecting");
    await new Promise((r) => setTimeout(r, 2000));
  }
  connect();
  // Between progress events the elapsed clocks still tick.
  setInterval(() => {
    for (const [id, run] of store.runs) if (run.status === "running") notify("tick", id);
  }, 200);
}
