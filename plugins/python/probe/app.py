"""probe: a Python agent that misbehaves on request and tries every capability, the
fixture of the host's tests for Python guests. Not an example to copy.
"""

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Optional

from corral import Agent, AgentError, agents, config, http, kv, llm

agent = Agent("probe-py", "0.1.0", "Misbehaves on request (a test fixture).")


@agent.action
def ok() -> dict:
    """Succeed."""
    return {"ok": True}


@dataclass
class Failure:
    code: str
    message: str
    retryable: bool = False


@agent.action
def fail(input: Failure) -> dict:
    """Fail with the given agent error."""
    raise AgentError(input.code, input.message, input.retryable)


@agent.action
def crash() -> dict:
    """Raise an exception the agent does not handle."""
    return {"ratio": 1 / 0}


@agent.action
def spin() -> dict:
    """Loop forever."""
    n = 0
    while True:
        n += 1


@agent.action
def hog() -> dict:
    """Allocate memory until something stops it."""
    blocks = []
    while True:
        blocks.append(bytearray(8 << 20))


@agent.action
def chatter() -> dict:
    """Log through logging and print."""
    logging.getLogger("probe").warning("a warning from logging")
    print("a line from print")
    return {"logged": 2}


@dataclass
class Path:
    path: str


def os_error(e: OSError) -> AgentError:
    return AgentError("os_error", f"{type(e).__name__}: {e}")


@agent.action
def read_file(input: Path) -> dict:
    """Read a file of the host."""
    try:
        with open(input.path, "rb") as f:
            return {"bytes": len(f.read())}
    except OSError as e:
        raise os_error(e)


@agent.action
def env() -> dict:
    """The environment variables the guest sees."""
    return {"variables": dict(os.environ)}


@dataclass
class Address:
    host: str
    port: int


@agent.action
def connect(input: Address) -> dict:
    """Open a TCP connection."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect((input.host, input.port))
        return {"connected": True}
    except OSError as e:
        raise os_error(e)


@dataclass
class Store:
    key: str
    value: str


@agent.action
def kv_roundtrip(input: Store) -> dict:
    """Set a key, then read it back."""
    kv.set(input.key, input.value)
    return {"value": kv.get(input.key).decode()}


@dataclass
class Name:
    name: str


@agent.action
def secret(input: Name) -> dict:
    """Read a secret."""
    value = config.secret(input.name)
    return {"length": None if value is None else len(value)}


@dataclass
class Url:
    url: str


@agent.action
def fetch(input: Url) -> dict:
    """GET a URL."""
    response = http.get(input.url, timeout_ms=5000)
    return {"status": response.status, "body": response.text()}


@dataclass
class Call:
    agent: str
    action: str
    input: Any = field(default_factory=dict)


@agent.action
def call(input: Call) -> Any:
    """Call another agent."""
    return agents.call(input.agent, input.action, input.input)


@dataclass
class Ask:
    model: str
    question: str


@agent.action
def ask(input: Ask) -> dict:
    """Ask a model."""
    answer = llm.chat(input.model, [llm.user(input.question)], max_tokens=16)
    return {"content": answer.content, "tokens": answer.usage.input_tokens + answer.usage.output_tokens}


Handler = agent.handler()  # the component's export: componentize-py looks for `Handler`
