// The REST API, with the presenter's token on every write and errors worded for people.

export const config = JSON.parse(document.getElementById("lab-config").textContent);

const TOKEN_KEY = "lab-token";

export function token() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}
export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* private mode: the token lives as long as the page */ }
}

// Presenter = may start runs: no token configured, or a token kept for this tab.
export function isPresenter() {
  return !config.auth_required || Boolean(token());
}

// A student's key (POST /api/v1/class/join gave it for the teacher's code and a name), kept in this
// browser: it names them on their runs and guesses (static/js/student.js joins and leaves).
const STUDENT_KEY = "lab-student-key";
export function studentKey() {
  try { return localStorage.getItem(STUDENT_KEY) || ""; } catch { return ""; }
}
export function setStudentKey(value) {
  try {
    if (value) localStorage.setItem(STUDENT_KEY, value);
    else localStorage.removeItem(STUDENT_KEY);
  } catch { /* private mode: the key lives as long as the page */ }
  document.dispatchEvent(new CustomEvent("lab-student-key"));
}
// May start runs of their own: the presenter, or a student who joined the class.
export function canRun() {
  return isPresenter() || Boolean(studentKey());
}

export class ApiError extends Error {
  constructor(status, message, field = null, body = null) {
    super(message);
    this.status = status;
    this.field = field;
    this.body = body;
  }
}

const listeners = new Set();
export function onAuthLost(fn) { listeners.add(fn); }

// Errors are RFC 9457 problems: {type, code, status, title, detail, errors: [{loc, message, value}]}.
// "Value error, '-5ms' is not a delay" -> "'-5ms' is not a delay": people read the message, not pydantic's kind.
export function plainMessage(msg) {
  return String(msg || "invalid").replace(/^(Value|Assertion) error,\s*/i, "").replace(/^./, (c) => c.toUpperCase());
}

function fieldError(items) {
  // FastAPI's detail[] or RFC 9457 errors[]: [{loc: ["body", "server", "size"], msg | detail: "..."}]
  const first = items[0];
  const loc = (first.loc || []).filter((p) => p !== "body" && typeof p === "string");
  const field = loc.length ? loc[loc.length - 1] : null;
  const msg = plainMessage(first.msg || first.detail || first.message);
  return { text: field ? `${field}: ${msg}` : msg, field, msg };
}

function detailText(body) {
  if (body && Array.isArray(body.errors) && body.errors.length) return fieldError(body.errors);
  const d = body && body.detail;
  if (!d) return { text: body && body.title ? body.title : null, field: null };
  if (typeof d === "string") return { text: d, field: null };
  if (Array.isArray(d) && d.length) return fieldError(d);
  if (typeof d === "object") {
    const field = d.field || null;
    const text = d.message ? (field ? `${field}: ${d.message}` : d.message) : JSON.stringify(d);
    return { text, field };
  }
  return { text: String(d), field: null };
}

// Every page's one way to call the service: the presenter's token (else a joined student's key) on
// every request, errors as ApiError with a sentence for people. `announce401`: a refused token signs
// the presenter out (not for the sign-in check itself); `headers`: extra ones (an Idempotency-Key).
export async function request(method, path, body, { announce401 = true, headers: extra = {} } = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const asStudent = !token() && Boolean(studentKey());
  if (token() || asStudent) headers.Authorization = `Bearer ${token() || studentKey()}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch {
    throw new ApiError(0, "The lab service is unreachable. Is it running?");
  }
  let data = null;
  const text = await res.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (res.ok) return data;
  const { text: detail, field, msg } = detailText(typeof data === "object" ? data : null);
  let message;
  switch (res.status) {
    case 401:
      if (asStudent) { // the class session ended (a new join code) or the teacher removed this name
        setStudentKey("");
        message = "Your class key is no longer valid: join the class again with the teacher's code.";
        break;
      }
      if (!token()) { message = detail || "This needs the teacher's token, or joining the class."; break; }
      setToken("");
      if (announce401) listeners.forEach((fn) => fn());
      message = "The presenter token was refused. Sign in again to start runs.";
      break;
    case 403: message = detail || "That is not yours to do: it needs the teacher's token."; break;
    case 404: message = detail || "Not found."; break;
    case 409: message = detail || "That run has already finished."; break;
    case 422: message = detail || "Some field is not valid."; break;
    case 429: message = detail || "Too many requests: wait a moment, then try again."; break; // names the limit
    default: message = detail || `The lab service answered ${res.status}.`;
  }
  const error = new ApiError(res.status, message, field, data);
  error.fieldMessage = msg || null; // the message without the field's name, for beside the field
  throw error;
}

// The form checked by the lab's one validator (POST /api/v1/validate), every field at once:
// {ok, errors: {field: sentence}, general: [sentences not about one field], server (normalised), text}.
async function checkFields(server) {
  try {
    const res = await request("POST", "/api/v1/validate", server);
    return { ok: true, errors: {}, general: [], server: res.server, text: res.text };
  } catch (err) {
    const items = err instanceof ApiError && err.status === 422 && err.body && err.body.errors;
    if (!Array.isArray(items)) throw err;
    const errors = {};
    const general = [];
    for (const e of items) {
      const loc = e.loc || [];
      const msg = String(e.message || "This field is not valid."); // the validator's sentence, shown as it is
      if (loc.length === 2 && loc[0] === "body" && typeof loc[1] === "string") errors[loc[1]] ??= msg;
      else general.push(msg);
    }
    return { ok: false, errors, general, server: null, text: null };
  }
}

// Lists come back either bare or wrapped ({"runs": [...]}, {"items": [...]}).
export function unwrapList(data, ...keys) {
  if (Array.isArray(data)) return data;
  for (const k of [...keys, "items", "results", "data"]) {
    if (data && Array.isArray(data[k])) return data[k];
  }
  return [];
}

export const api = {
  runs: async (params = "") => unwrapList(await request("GET", `/api/v1/runs${params}`), "runs"),
  runList: (params = "") => request("GET", `/api/v1/runs${params}`),
  run: (id) => request("GET", `/api/v1/runs/${encodeURIComponent(id)}`),
  queue: () => request("GET", "/api/v1/queue"),
  startRun: (body) => request("POST", "/api/v1/runs", body),
  cancelRun: (id) => request("POST", `/api/v1/runs/${encodeURIComponent(id)}/cancel`),
  scenarioRows: (name, perRow = 3) => request("GET", `/api/v1/scenarios/${encodeURIComponent(name)}/rows?per_row=${perRow}`),
  trace: async (id) => {
    const res = await fetch(`/api/v1/runs/${encodeURIComponent(id)}/trace`, { cache: "no-store" });
    if (!res.ok) throw new ApiError(res.status, res.status === 404 ? "This run has no request trace." : `The lab service answered ${res.status}.`);
    return (await res.text()).split("\n").filter(Boolean).map((line) => JSON.parse(line));
  },
  checkFields,
  scenarios: async () => unwrapList(await request("GET", "/api/v1/scenarios"), "scenarios"),
  startScenario: (name, body) => request("POST", `/api/v1/scenarios/${encodeURIComponent(name)}/runs`, body),
  createServer: (fields) => request("POST", "/api/v1/servers", fields),
  deleteServer: (id) => request("DELETE", `/api/v1/servers/${encodeURIComponent(id)}`),
  health: () => request("GET", "/api/v1/health"),
  checkToken: () => request("POST", "/ui/token-check", undefined, { announce401: false }),
};
