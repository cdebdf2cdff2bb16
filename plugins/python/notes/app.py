"""notes in Python: a small memory in key-value state, using kv, config and agent calls.

Actions:
- `add` {text, id?, ttl_ms?} stores a note under `note/<id>` (the id defaults to the
  execution id) and returns {id}. Notes longer than the config value `max_chars`
  (default 1000) are refused with `too_long`.
- `get` {id} returns the note, or fails with `not_found`.
- `list` {prefix?} returns {notes: [...]}, in id order.
- `stats` {id} returns the note's text statistics, computed by another agent: the one
  named by the config value `stats_agent` (default `text-stats`), which the policy must
  grant (`grants.agents`).

Needs `grants.kv`; without it every action fails with `kv_denied`.
"""

import logging
from dataclasses import dataclass
from typing import Optional

from corral import Agent, AgentError, agents, config, context, kv

agent = Agent("notes-py", "0.1.0", "Keeps notes in key-value state (the Python example).")
log = logging.getLogger("notes")


def key(note_id: str) -> str:
    return f"note/{note_id}"


@dataclass
class Add:
    text: str
    id: Optional[str] = None
    ttl_ms: Optional[int] = None


@agent.action(description="Store a note")
def add(input: Add) -> dict:
    limit = int(config.get("max_chars", "1000"))
    if len(input.text) > limit:
        raise AgentError("too_long", f"a note holds at most {limit} characters, this one has {len(input.text)}")
    note_id = input.id or context().execution_id
    kv.set_json(key(note_id), {"id": note_id, "text": input.text}, ttl_ms=input.ttl_ms)
    log.info("stored note %s", note_id)
    return {"id": note_id}


@dataclass
class Id:
    id: str


@agent.action(description="Read a note")
def get(input: Id) -> dict:
    note = kv.get_json(key(input.id))
    if note is None:
        raise AgentError("not_found", f"there is no note {input.id!r}")
    return note


@dataclass
class Prefix:
    prefix: str = ""


@agent.action(name="list", description="List notes by id prefix")
def list_notes(input: Prefix) -> dict:
    return {"notes": [kv.get_json(k) for k in kv.keys(key(input.prefix))]}


@agent.action(description="Text statistics of a note, from another agent")
def stats(input: Id) -> dict:
    note = get(input)
    return agents.call(config.get("stats_agent", "text-stats"), "stats", {"text": note["text"]})


Handler = agent.handler()  # the component's export: componentize-py looks for `Handler`
