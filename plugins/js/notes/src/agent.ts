// notes in TypeScript: a small memory in key-value state, using kv, config and agent
// calls. The same actions as plugins/python/notes:
// - add {text, id?, ttl_ms?} -> {id}; notes longer than config `max_chars` (default
//   1000) are refused with `too_long`.
// - get {id} -> the note, or `not_found`;  list {prefix?} -> {notes}
// - stats {id} -> the note's statistics from the agent named by config `stats_agent`
//   (default `text-stats`), which the policy must grant.
// Needs `grants.kv`; without it every action fails with `kv_denied`.
import { agent, AgentError, agents, config, context, kv } from "corral-sdk";

interface Note {
  id: string;
  text: string;
}

const key = (id: string) => `note/${id}`;

function get({ id }: { id: string }): Note {
  const note = kv.getJson<Note>(key(id));
  if (note === undefined) throw new AgentError("not_found", `there is no note ${JSON.stringify(id)}`);
  return note;
}

const idSchema = { type: "object", properties: { id: { type: "string" } }, required: ["id"] };

export const handler = agent({
  name: "notes-js",
  version: "0.1.0",
  description: "Keeps notes in key-value state (the TypeScript example).",
  actions: {
    add: {
      description: "Store a note",
      schema: {
        type: "object",
        properties: { text: { type: "string" }, id: { type: "string" }, ttl_ms: { type: "integer", minimum: 1 } },
        required: ["text"],
      },
      run: ({ text, id, ttl_ms }: { text: string; id?: string; ttl_ms?: number }) => {
        const limit = Number(config.get("max_chars", "1000"));
        if ([...text].length > limit) {
          throw new AgentError("too_long", `a note holds at most ${limit} characters, this one has ${[...text].length}`);
        }
        const noteId = id ?? context().executionId;
        kv.setJson(key(noteId), { id: noteId, text }, { ttlMs: ttl_ms });
        console.info(`stored note ${noteId}`);
        return { id: noteId };
      },
    },
    get: { description: "Read a note", schema: idSchema, run: get },
    list: {
      description: "List notes by id prefix",
      schema: { type: "object", properties: { prefix: { type: "string" } } },
      run: ({ prefix = "" }: { prefix?: string }) => ({
        notes: [...kv.keys(key(prefix))].map((k) => kv.getJson<Note>(k)),
      }),
    },
    stats: {
      description: "Text statistics of a note, from another agent",
      schema: idSchema,
      run: (input: { id: string }) => agents.call(config.get("stats_agent", "text-stats"), "stats", { text: get(input).text }),
    },
  },
});
