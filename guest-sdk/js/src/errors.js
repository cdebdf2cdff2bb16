// The SDK's errors. Each is an AgentError: an action that lets one escape fails with
// its code, exactly as the Rust and Python SDKs' errors do.

/** An expected failure: the host records `agent_error` (`invalid_input` for that code). */
export class AgentError extends Error {
  constructor(code, message, retryable = false) {
    super(message);
    this.name = "AgentError";
    this.code = code;
    this.retryable = retryable;
  }

  static invalidInput(message) {
    return new AgentError("invalid_input", message);
  }
}

/** kv_denied, kv_limit_exceeded, kv_invalid_key, kv_unavailable (retryable), kv_invalid_json. */
export class KvError extends AgentError {}
/** config_denied, config_unavailable (retryable). */
export class ConfigError extends AgentError {}
/** call_denied, call_depth_exceeded, call_cycle, or the callee's own code. */
export class CallError extends AgentError {}
/** http_request_denied (and the other refusals), invalid_url, invalid_response. */
export class HttpError extends AgentError {}
/** llm_denied, llm_budget_exhausted, llm_rate_limited, llm_provider_error, llm_timeout, llm_invalid_request. */
export class LlmError extends AgentError {}

/** The payload of an error thrown by an imported WIT function (`result<_, E>`). */
export function payload(e) {
  return e && typeof e === "object" && "payload" in e ? e.payload : e;
}
