// Configuration and secrets the operator set for this agent.
//   config.get("greeting", "Hello"); config.secret("API_TOKEN")  // needs grants.secrets
import * as wit from "corral:agent/config@0.1.0";
import { ConfigError, payload } from "./errors.js";

function guard(f) {
  try {
    return f();
  } catch (e) {
    const p = payload(e);
    if (p && p.tag === "denied") throw new ConfigError("config_denied", p.val);
    if (p && p.tag === "unavailable") throw new ConfigError("config_unavailable", p.val, true);
    throw e;
  }
}

/** The config value `name`, or `fallback` when the operator set none. */
export function get(name, fallback = undefined) {
  const value = guard(() => wit.get(name));
  return value === undefined ? fallback : value;
}

/** The secret `name` if set (undefined if not); it must be granted. */
export function secret(name) {
  return guard(() => wit.getSecret(name));
}
