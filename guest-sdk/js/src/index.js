// Corral agents in JavaScript and TypeScript, built with componentize-js.
//
//   import { agent, AgentError } from "corral-sdk";
//   export const handler = agent({
//     name: "greeter", version: "0.1.0", description: "Greets people.",
//     actions: {
//       greet: {
//         description: "Greets someone by name.",
//         schema: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
//         run: ({ name }) => ({ greeting: `Hello, ${name}!` }),
//       },
//     },
//   });
//
// `handler` is the component's export. An action's input is checked against its JSON
// Schema (the subset in ./schema.js); a mismatch fails with `invalid_input` naming
// the field. Throw an AgentError for an expected failure; any other exception becomes
// the agent error `uncaught_exception`, with its stack in the log. `console` goes to
// the host's log.
import { log } from "corral:agent/logging@0.1.0";
import { check } from "./schema.js";
import { AgentError } from "./errors.js";

export { AgentError, KvError, ConfigError, CallError, HttpError, LlmError } from "./errors.js";
export * as kv from "./kv.js";
export * as config from "./config.js";
export * as agents from "./agents.js";
export * as http from "./http.js";
export * as llm from "./llm.js";

/** The WIT world this SDK is written against. */
export const WORLD = "corral:agent/agent@0.1.0";

function text(args) {
  return args.map((a) => (typeof a === "string" ? a : a instanceof Error ? (a.stack || String(a)) : safeJson(a))).join(" ");
}

function safeJson(value) {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

// console.* to the host log, one line per call.
const levels = { trace: "trace", debug: "debug", log: "info", info: "info", warn: "warn", error: "error" };
for (const [method, level] of Object.entries(levels)) {
  globalThis.console[method] = (...args) => log(level, text(args));
}

let current = null;

/** The current invocation's context: { executionId, agentName, agentVersion, correlationId }. */
export function context() {
  if (current === null) throw new Error("context() is only available while an action runs");
  return current;
}

/** Defines an agent; returns the `handler` export. */
export function agent(definition) {
  const { name, version, description = "", actions } = definition;
  const entries = Object.entries(actions);
  const describe = () => ({
    name,
    version,
    description,
    actions: entries.map(([actionName, a]) => ({
      name: actionName,
      description: a.description ?? "",
      inputSchema: a.schema === undefined ? undefined : JSON.stringify(a.schema),
    })),
  });

  // The error the host records: an AgentError as it is, anything else as
  // `uncaught_exception` with its stack in the log. Running out of memory is not the
  // agent's error to report: it is rethrown, the component traps, and the host records
  // the limit that caused it (`memory_limit_exceeded`).
  const failure = (actionName, e) => {
    if (String(e) === "out of memory") return e;
    if (e instanceof AgentError) {
      return { code: String(e.code), message: String(e.message ?? ""), retryable: Boolean(e.retryable) };
    }
    console.error(`uncaught exception in action ${actionName}: ${e && e.stack ? e.stack : e}`);
    return {
      code: "uncaught_exception",
      message: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
      retryable: false,
    };
  };
  const encode = (actionName, output) => {
    try {
      return JSON.stringify(output === undefined ? null : output);
    } catch (e) {
      throw new AgentError("invalid_output", `action ${actionName} returned what JSON cannot hold: ${e.message}`);
    }
  };

  // Sync actions answer at once; an async one returns a Promise, which componentize-js
  // runs to completion (the event loop turns until it settles).
  const call = (invocation) => {
    current = invocation.context;
    let output;
    try {
      output = run(invocation);
      if (!(output instanceof Promise)) return encode(invocation.action, output);
    } catch (e) {
      throw failure(invocation.action, e);
    } finally {
      if (!(output instanceof Promise)) current = null;
    }
    return output.then(
      (value) => {
        current = null;
        try {
          return encode(invocation.action, value);
        } catch (e) {
          throw failure(invocation.action, e);
        }
      },
      (e) => {
        current = null;
        throw failure(invocation.action, e);
      },
    );
  };

  const run = (invocation) => {
    const action = Object.prototype.hasOwnProperty.call(actions, invocation.action) ? actions[invocation.action] : undefined;
    if (action === undefined) {
      const known = entries.map(([n]) => n).sort().join(", ") || "none";
      throw new AgentError("unknown_action", `${name} has no action ${JSON.stringify(invocation.action)} (it has: ${known})`);
    }
    let input;
    try {
      input = JSON.parse(invocation.input);
    } catch (e) {
      throw AgentError.invalidInput(`the input is not JSON: ${e.message}`);
    }
    if (action.schema !== undefined) {
      const problem = check(input, action.schema, "input");
      if (problem !== null) throw AgentError.invalidInput(problem);
    }
    return action.run(input);
  };

  return { call, describe };
}
