// First start on a new machine: the service calibrates it in the background (about a minute) and
// answers meanwhile; every page says so, with how far it got, until it is done ("calibrating (n of m)").
// The service's side: GET /api/v1/health says `starting` and `calibrating: {step, steps}`.
import { api } from "./api.js";
import { $ } from "./format.js";

const EVERY_MS = 3000;

export function watchStarting(health = null) {
  const banner = $("banner-start");
  if (!banner) return;
  const show = (h) => {
    const c = h && h.status === "starting" ? h.calibrating : null;
    banner.hidden = !c;
    if (c) banner.querySelector(".banner-text").textContent = `calibrating (${c.step} of ${c.steps})`;
    return Boolean(c);
  };
  const poll = async () => {
    try { if (!show(await api.health())) return; } catch { /* the connection banner says it */ }
    setTimeout(poll, EVERY_MS);
  };
  if (health ? show(health) : true) setTimeout(poll, health ? EVERY_MS : 0);
}
