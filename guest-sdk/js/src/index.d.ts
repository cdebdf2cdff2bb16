// TypeScript types for the Corral JavaScript SDK and the corral:agent@0.1.0 world.

/** What the host knows about the invocation being served. */
export interface Context {
  executionId: string;
  agentName: string;
  agentVersion: string;
  correlationId?: string;
}

/** An expected failure: the host records `agent_error` (`invalid_input` for that code). */
export class AgentError extends Error {
  constructor(code: string, message: string, retryable?: boolean);
  readonly code: string;
  readonly retryable: boolean;
  static invalidInput(message: string): AgentError;
}
export class KvError extends AgentError {}
export class ConfigError extends AgentError {}
export class CallError extends AgentError {}
export class HttpError extends AgentError {}
export class LlmError extends AgentError {}

/** A JSON Schema (the subset the SDK checks: type, properties, required, additionalProperties, items, enum, const, minimum, maximum, minLength, maxLength, anyOf). */
export type Schema = boolean | { [keyword: string]: unknown };

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One action: its input type `I` and output type `O`. */
export interface Action<I = any, O = unknown> {
  description?: string;
  /** Checked before `run` is called; a mismatch fails with `invalid_input`. */
  schema?: Schema;
  run(input: I): O | Promise<O>;
}

export interface AgentDefinition {
  name: string;
  version: string;
  description?: string;
  actions: Record<string, Action>;
}

/** The component's `handler` export. */
export interface Handler {
  call(invocation: { action: string; input: string; context: Context }): string | Promise<string>;
  describe(): unknown;
}

/** Defines an agent; export the result as `handler`. */
export function agent(definition: AgentDefinition): Handler;
/** The current invocation's context (only inside an action). */
export function context(): Context;
export const WORLD: string;

export namespace kv {
  export function get(key: string): Uint8Array | undefined;
  export function getText(key: string): string | undefined;
  export function set(key: string, value: string | Uint8Array, options?: { ttlMs?: number }): void;
  export function getJson<T = Json>(key: string): T | undefined;
  export function setJson(key: string, value: unknown, options?: { ttlMs?: number }): void;
  export { remove as delete };
  function remove(key: string): boolean;
  export function keys(prefix?: string, page?: number): Generator<string>;
}

export namespace config {
  export function get(name: string): string | undefined;
  export function get(name: string, fallback: string): string;
  export function secret(name: string): string | undefined;
}

export namespace agents {
  export function call<T = Json>(agent: string, action: string, input?: unknown): T;
  export function submitTask(agent: string, action: string, input?: unknown): string;
  export function waitTask<T = Json>(id: string, timeoutMs?: number): T | undefined;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  json<T = Json>(): T;
}

export namespace http {
  export function request(method: string, url: string, options?: { body?: string | Uint8Array; headers?: Record<string, string> }): Promise<HttpResponse>;
  export function get(url: string, options?: { headers?: Record<string, string> }): Promise<HttpResponse>;
  export function post(url: string, body: string | Uint8Array, options?: { headers?: Record<string, string> }): Promise<HttpResponse>;
}

export namespace llm {
  export type Role = "system" | "user" | "assistant" | "tool";
  export interface ToolCall { id: string; name: string; arguments: string }
  export interface Message { role: Role; content: string; toolCalls: ToolCall[]; toolCallId?: string }
  export interface Tool { name: string; description: string; parameters: string }
  export interface Usage { inputTokens: number; outputTokens: number }
  export interface ChatResponse { content: string; toolCalls: ToolCall[]; finishReason: string; model: string; usage: Usage }
  export function system(content: string): Message;
  export function user(content: string): Message;
  export function assistant(content: string, toolCalls?: ToolCall[]): Message;
  export function toolResult(callId: string, content: string): Message;
  export function tool(name: string, description: string, parameters: unknown): Tool;
  export function chat(model: string, messages: Message[], options?: { tools?: Tool[]; maxTokens?: number; temperature?: number; json?: boolean }): ChatResponse;
}
