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
function detailText(body) {
  if (!body || typeof body !== "object") return { text: null, field: null };
  const first = Array.isArray(body.errors) && body.errors.length ? body.errors[0] : null;
  if (first) {
    // loc: ["body", "server", "size"]; the last name is the field the form shows the message under
    const loc = (first.loc || []).filter((p) => p !== "body" && typeof p === "string");
    const field = loc.length ? loc[loc.length - 1] : null;
    return { text: `${loc.join(".") || "request"}: ${first.message || "invalid"}`, field };
  }
  const d = body.detail;
  if (typeof d === "string" && d) return { text: d, field: null };
  return { text: body.title || null, field: null };
}

// `announce401`: a refused token signs the presenter out (not for the sign-in check itself).
export async function request(method, path, body, { announce401 = true } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && token()) headers.Authorization = `Bearer ${token()}`;
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
  const { text: detail, field } = detailText(typeof data === "object" ? data : null);
  let message;
  switch (res.status) {
    case 401:
    case 403:
      setToken("");
      if (announce401) listeners.forEach((fn) => fn());
      message = "The presenter token was refused. Sign in again to start runs.";
      break;
    case 404: message = detail || "Not found."; break;
    case 409: message = detail || "That run has already finished."; break;
    case 422: message = detail || "Some field is not valid."; break;
    case 429: message = `The run queue is full. ${detail ? detail + " " : ""}Wait for a run to finish, then try again.`; break;
    default: message = detail || `The lab service answered ${res.status}.`;
  }
  throw new ApiError(res.status, message, field, data);
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
  runs: async (params = "") => unwrapList(await request("GET", `/api/runs${params}`), "runs"),
  runList: (params = "") => request("GET", `/api/runs${params}`),
  run: (id) => request("GET", `/api/runs/${encodeURIComponent(id)}`),
  startRun: (body) => request("POST", "/api/runs", body),
  cancelRun: (id) => request("POST", `/api/runs/${encodeURIComponent(id)}/cancel`),
  scenarios: async () => unwrapList(await request("GET", "/api/scenarios"), "scenarios"),
  startScenario: (name, body) => request("POST", `/api/scenarios/${encodeURIComponent(name)}/runs`, body),
  createServer: (fields) => request("POST", "/api/servers", fields),
  deleteServer: (id) => request("DELETE", `/api/servers/${encodeURIComponent(id)}`),
  health: () => request("GET", "/api/health"),
  checkToken: () => request("POST", "/ui/token-check", undefined, { announce401: false }),
};
