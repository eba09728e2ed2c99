// What every page shares: connection indicator, presenter sign-in, theme, help, messages, keys.

import { api, config, isPresenter, onAuthLost, setToken, token } from "./api.js";
import { watchStarting } from "./starting.js";
import { onConnection } from "./live.js";
import { $ } from "./format.js";


// --- messages ---------------------------------------------------------------------
let messageTimer = null;
export function showMessage(text, kind = "info", ms = 0) {
  const banner = $("banner-msg");
  banner.dataset.kind = kind;
  banner.querySelector(".banner-text").textContent = text;
  banner.hidden = false;
  clearTimeout(messageTimer);
  if (ms) messageTimer = setTimeout(() => { banner.hidden = true; }, ms);
}
export function hideMessage() { $("banner-msg").hidden = true; }

// --- connection -------------------------------------------------------------------
function initConnection() {
  const pill = $("conn");
  const banner = $("banner-conn");
  let bannerTimer = null;
  onConnection((c) => {
    pill.dataset.state = c.state;
    pill.querySelector(".conn-text").textContent =
      c.state === "live" ? "live" : c.state === "connecting" ? "connecting" : "reconnecting";
    clearTimeout(bannerTimer);
    if (c.state === "live") {
      if (!banner.hidden) showMessage("Reconnected. History re-read from the lab service.", "ok", 4000);
      banner.hidden = true;
    } else if (c.state === "reconnecting") {
      // A blip shorter than a second is not worth a banner.
      bannerTimer = setTimeout(() => {
        banner.hidden = false;
        banner.querySelector(".banner-text").textContent = "Reconnecting…";
      }, 800);
    }
  });
}

// --- presenter / audience -----------------------------------------------------------
const roleListeners = new Set();
export function onRoleChange(fn) { roleListeners.add(fn); }

function applyRole() {
  const presenter = isPresenter();
  document.body.classList.toggle("audience", !presenter);
  document.body.classList.toggle("presenter", presenter);
  const role = $("role");
  if (config.auth_required) {
    role.hidden = false;
    role.dataset.role = presenter ? "presenter" : "audience";
    role.replaceChildren(presenter ? "Presenter" : "Watching", ...(presenter ? [] : [Object.assign(
      document.createElement("span"), { className: "role-extra", textContent: " · sign in" })]));
    role.title = presenter ? "Signed in as presenter (click to sign out)" : "Read-only view. Presenters: click to sign in.";
  } else {
    role.hidden = true;
  }
  for (const fn of roleListeners) fn(presenter);
}

export function askToken() {
  const dialog = $("token-dialog");
  $("token-error").hidden = true;
  $("token-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

function initRole() {
  const dialog = $("token-dialog");
  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    setToken(value);
    try {
      await api.checkToken();
      dialog.close();
      applyRole();
      showMessage("Signed in: run controls are on.", "ok", 3000);
    } catch (err) {
      setToken("");
      $("token-error").textContent = err.status === 401 ? "That token is not right." : err.message;
      $("token-error").hidden = false;
    }
  });
  $("token-cancel").addEventListener("click", () => dialog.close());
  $("role").addEventListener("click", () => {
    if (isPresenter()) {
      setToken("");
      applyRole();
      showMessage("Signed out: watching only.", "info", 3000);
    } else {
      askToken();
    }
  });
  onAuthLost(() => { applyRole(); showMessage("The presenter token was refused: sign in again.", "error"); askToken(); });
  applyRole();
  // A presenter opening the page with ?presenter asks for the token once; everyone else watches.
  if (config.auth_required && !token() && new URLSearchParams(location.search).has("presenter")) askToken();
}

// --- theme, help, keys --------------------------------------------------------------
const themeListeners = new Set();
export function onThemeChange(fn) { themeListeners.add(fn); }
export function toggleTheme() {
  const next = document.documentElement.dataset.theme === "light" ? "dark" : "light";
  document.documentElement.dataset.theme = next;
  try { localStorage.setItem("lab-theme", next); } catch { /* ignore */ }
  for (const fn of themeListeners) fn(next);
}

export function toggleHelp() {
  const help = $("help");
  if (help.open) help.close();
  else help.showModal();
}

export function typing(e) {
  const t = e.target;
  return t && (t.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName));
}

const keyHandlers = [];
// fn(e) returns true when it handled the key.
export function onKey(fn) { keyHandlers.push(fn); }

function initKeys() {
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (typing(e)) return;
    if (e.key === "?") { e.preventDefault(); toggleHelp(); return; }
    if (document.querySelector("dialog[open]")) return;
    if (e.key === "t") { toggleTheme(); return; }
    for (const fn of keyHandlers) if (fn(e)) { e.preventDefault(); return; }
  });
}

// The real tools behind the numbers, for the credits line.
async function showVersions() {
  try {
    const h = await api.health();
    const v = (text) => (String(text || "").match(/\d+\.\d+(\.\d+)?/) || [""])[0];
    const names = ["nbdkit", "qemu-img", "libnbd"].filter((k) => h.versions && h.versions[k]);
    document.getElementById("versions").textContent =
      names.map((k) => `${k} ${v(h.versions[k])}`).join(" · ") + (h.version ? ` · fastzero-lab ${h.version}` : "");
  } catch { /* the connection pill already says the service is away */ }
}

export function init() {
  showVersions();
  watchStarting();
  $("theme-toggle").addEventListener("click", toggleTheme);
  $("help-open").addEventListener("click", toggleHelp);
  $("banner-msg").querySelector(".banner-close").addEventListener("click", hideMessage);
  initConnection();
  initRole();
  initKeys();
}
