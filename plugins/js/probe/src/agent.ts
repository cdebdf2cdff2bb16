// probe: a TypeScript agent that misbehaves on request and tries every capability, the
// fixture of the host's tests for JavaScript guests. Not an example to copy.
// (The JavaScript runtime has no file, environment or socket API: those WASI imports
// are still linked and denied by the host, but no JS code can reach them.)
import { agent, AgentError, agents, config, http, kv, llm } from "corral-sdk";

export const handler = agent({
  name: "probe-js",
  version: "0.1.0",
  description: "Misbehaves on request (a test fixture).",
  actions: {
    ok: { run: () => ({ ok: true }) },
    fail: {
      run: ({ code, message, retryable = false }: { code: string; message: string; retryable?: boolean }) => {
        throw new AgentError(code, message, retryable);
      },
    },
    crash: {
      run: () => {
        const missing: any = undefined;
        return { value: missing.field };
      },
    },
    spin: {
      run: () => {
        let n = 0;
        for (;;) n++;
      },
    },
    hog: {
      run: () => {
        const blocks: Uint8Array[] = [];
        for (;;) blocks.push(new Uint8Array(8 << 20).fill(1));
      },
    },
    chatter: {
      run: () => {
        console.warn("a warning from console.warn");
        console.log("a line from console.log");
        return { logged: 2 };
      },
    },
    kv_roundtrip: {
      run: ({ key, value }: { key: string; value: string }) => {
        kv.set(key, value);
        return { value: kv.getText(key) };
      },
    },
    secret: {
      run: ({ name }: { name: string }) => {
        const value = config.secret(name);
        return { length: value === undefined ? null : value.length };
      },
    },
    fetch: {
      run: async ({ url }: { url: string }) => {
        const response = await http.get(url);
        return { status: response.status, body: response.body };
      },
    },
    call: {
      run: ({ agent: name, action, input = {} }: { agent: string; action: string; input?: unknown }) =>
        agents.call(name, action, input),
    },
    ask: {
      run: ({ model, question }: { model: string; question: string }) => {
        const answer = llm.chat(model, [llm.user(question)], { maxTokens: 16 });
        return { content: answer.content, tokens: answer.usage.inputTokens + answer.usage.outputTokens };
      },
    },
  },
});
