// Calls to language models the operator configured, by the alias the policy grants.
//   const answer = llm.chat("fast", [llm.system("Answer yes or no."), llm.user("Spam?")], { maxTokens: 5 });
//   answer.content; answer.usage.inputTokens
import * as wit from "corral:agent/llm@0.1.0";
import { LlmError, payload } from "./errors.js";

const message = (role, content, extra = {}) => ({ role, content, toolCalls: [], toolCallId: undefined, ...extra });
export const system = (content) => message("system", content);
export const user = (content) => message("user", content);
export const assistant = (content, toolCalls = []) => message("assistant", content, { toolCalls });
/** The answer to the model's tool call `callId`. */
export const toolResult = (callId, content) => message("tool", content, { toolCallId: callId });
/** A tool the model may call; `parameters` is a JSON Schema (object or JSON text). */
export const tool = (name, description, parameters) => ({
  name,
  description,
  parameters: typeof parameters === "string" ? parameters : JSON.stringify(parameters),
});

const codes = {
  denied: "llm_denied",
  "budget-exhausted": "llm_budget_exhausted",
  "rate-limited": "llm_rate_limited",
  timeout: "llm_timeout",
  "invalid-request": "llm_invalid_request",
};

/** Sends one chat request to `model` (an alias) and waits for the whole answer. */
export function chat(model, messages, { tools = [], maxTokens, temperature, json = false } = {}) {
  try {
    return wit.chat({
      model,
      messages,
      tools,
      maxTokens,
      temperature,
      responseFormat: json ? "json" : "text",
    });
  } catch (e) {
    const p = payload(e);
    if (p && p.tag === "provider-error") throw new LlmError("llm_provider_error", p.val.message, p.val.retryable);
    if (p && p.tag in codes) {
      throw new LlmError(codes[p.tag], p.val, p.tag === "rate-limited" || p.tag === "timeout");
    }
    throw e;
  }
}
