// Key-value state that outlives an invocation (`grants.kv` in the agent's policy).
//   kv.set("greeting", "hello"); kv.setJson("session", { user: 7 }, { ttlMs: 3600000 });
//   kv.getJson("session"); kv.delete("greeting"); [...kv.keys("session/")]
import * as wit from "corral:agent/kv@0.1.0";
import { KvError, payload } from "./errors.js";

const codes = {
  denied: ["kv_denied", false],
  "limit-exceeded": ["kv_limit_exceeded", false],
  "invalid-key": ["kv_invalid_key", false],
  unavailable: ["kv_unavailable", true],
};

function guard(f) {
  try {
    return f();
  } catch (e) {
    const p = payload(e);
    if (p && p.tag in codes) {
      const [code, retryable] = codes[p.tag];
      throw new KvError(code, p.val, retryable);
    }
    throw e;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The value under `key` as bytes (Uint8Array), or undefined. */
export function get(key) {
  return guard(() => wit.get(key));
}

/** The value under `key` as text, or undefined. */
export function getText(key) {
  const bytes = get(key);
  return bytes === undefined ? undefined : decoder.decode(bytes);
}

/** Stores `value` (text or bytes) under `key`; with `ttlMs` it expires. */
export function set(key, value, { ttlMs } = {}) {
  const bytes = typeof value === "string" ? encoder.encode(value) : value;
  guard(() => wit.set(key, bytes, ttlMs === undefined ? undefined : BigInt(ttlMs)));
}

/** Removes `key`; whether it existed. */
function remove(key) {
  return guard(() => wit.delete(key));
}
export { remove as delete };

/** The value under `key` parsed as JSON, or undefined. */
export function getJson(key) {
  const value = getText(key);
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (e) {
    throw new KvError("kv_invalid_json", `the value of ${JSON.stringify(key)} is not JSON: ${e.message}`);
  }
}

/** Stores `value` as JSON under `key`. */
export function setJson(key, value, options = {}) {
  set(key, JSON.stringify(value), options);
}

/** Every key that starts with `prefix`, in byte order, fetched `page` at a time. */
export function* keys(prefix = "", page = 100) {
  let cursor;
  for (;;) {
    const batch = guard(() => wit.listKeys(prefix, cursor, page));
    yield* batch;
    if (batch.length < page) return;
    cursor = batch[batch.length - 1];
  }
}
