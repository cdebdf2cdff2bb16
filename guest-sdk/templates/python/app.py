"""{{name}}: a Corral agent. Build it with `corral build`, run it with
`corral run dist/{{name}}.wasm --action greet --input '{"name":"Ada"}'`.
"""

import logging
from dataclasses import dataclass

from corral import Agent, AgentError

agent = Agent("{{name}}", "0.1.0", "Greets people")
log = logging.getLogger("{{name}}")


@dataclass
class Greet:
    name: str


@agent.action(description="Say hello to someone by name")
def greet(input: Greet) -> dict:
    if not input.name:
        raise AgentError.invalid_input("name must not be empty")
    log.info("greeting %s", input.name)
    return {"greeting": f"Hello, {input.name}!"}


Handler = agent.handler()  # the component's export: componentize-py looks for `Handler`
