// Calling other agents of the same tenant (`grants.agents` names them).
//   agents.call("text-stats", "stats", { text: "Hi." }); agents.submitTask(...); agents.waitTask(id, 5000)
import * as wit from "corral:agent/agents@0.1.0";
import { CallError, payload } from "./errors.js";

function guard(f) {
  try {
    return f();
  } catch (e) {
    const p = payload(e);
    if (p && p.tag === "denied") throw new CallError("call_denied", p.val);
    if (p && p.tag === "depth-exceeded") throw new CallError("call_depth_exceeded", p.val);
    if (p && p.tag === "cycle") throw new CallError("call_cycle", p.val);
    if (p && (p.tag === "refused" || p.tag === "failed")) throw new CallError(p.val.code, p.val.message, p.val.retryable);
    throw e;
  }
}

function output(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CallError("invalid_json", `the callee's output is not JSON: ${e.message}`);
  }
}

/** Runs `action` of `agent` with `input`; its output, parsed. */
export function call(agent, action, input = {}) {
  return output(guard(() => wit.call(agent, action, JSON.stringify(input))));
}

/** Submits `action` of `agent` as a task; its id, at once. */
export function submitTask(agent, action, input = {}) {
  return guard(() => wit.submitTask(agent, action, JSON.stringify(input)));
}

/** Waits up to `timeoutMs` for a task: its output, or undefined while it runs. */
export function waitTask(id, timeoutMs = 0) {
  const text = guard(() => wit.waitTask(id, timeoutMs));
  return text === undefined ? undefined : output(text);
}
