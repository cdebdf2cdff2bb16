// {{name}}: a Corral agent. Build it with `corral build`, run it with
// `corral run dist/{{name}}.wasm --action greet --input '{"name":"Ada"}'`.
import { agent, AgentError } from "corral-sdk";

interface Greet {
  name: string;
}

export const handler = agent({
  name: "{{name}}",
  version: "0.1.0",
  description: "Greets people",
  actions: {
    greet: {
      description: "Say hello to someone by name",
      schema: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
      run: ({ name }: Greet) => {
        if (name === "") throw AgentError.invalidInput("name must not be empty");
        console.log(`greeting ${name}`);
        return { greeting: `Hello, ${name}!` };
      },
    },
  },
});
