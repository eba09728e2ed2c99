// The server fields as the lab declares them (lab.domain.spec.ServerSpec, served in the page's config):
// which there are, how the form holds them, and where each acts. No field is named here by hand.

import { config } from "./api.js";

export const FIELDS = config.server_fields.map((f) => f.name);
// typed as text: sent as typed, so an empty one is named by the validator (not taken as the default)
export const TYPED = config.server_fields.filter((f) => ["size", "delay", "layout"].includes(f.kind)).map((f) => f.name);
// what sits under the filter stack: the server kind, its plugin and disk (layer "backend")
export const BACKEND_FIELDS = config.server_fields.filter((f) => f.layer === "backend").map((f) => f.name);
export const DELAY_FIELDS = config.server_fields.filter((f) => f.kind === "delay").map((f) => f.name);

// The form's server fields (of `names`) as a request body: typed fields as typed, a checkbox as a
// boolean, an empty choice left out (the model's default).
export function formServer(form, names = FIELDS) {
  const server = {};
  for (const name of names) {
    const input = form && form.elements[name];
    if (!input) continue;
    const v = input.type === "checkbox" ? input.checked : input.value.trim();
    if (v !== "" || TYPED.includes(name)) server[name] = v;
  }
  return server;
}
