"""Corral agents in Python.

An agent is a module of plain functions marked as actions::

    from dataclasses import dataclass
    from corral import Agent, AgentError

    agent = Agent("greeter", "0.1.0", "Greets people.")

    @dataclass
    class Greet:
        name: str

    @agent.action(description="Greets someone by name.")
    def greet(input: Greet) -> dict:
        if not input.name:
            raise AgentError("empty_name", "name must not be empty")
        return {"greeting": f"Hello, {input.name}!"}

    Handler = agent.handler()  # the component's export, which componentize-py looks for

Each action takes one argument, the decoded input (a dataclass, a ``TypedDict``, a
plain type or nothing), and returns anything JSON can hold, or a dataclass. The input
is checked against the argument's type hint; a mismatch fails the invocation with
``invalid_input`` naming the field. ``describe()`` is generated from the actions,
with a JSON Schema for each input derived from its type (or the one you pass).

The capabilities of the world are modules: :mod:`corral.kv`, :mod:`corral.config`,
:mod:`corral.agents`, :mod:`corral.http`, :mod:`corral.llm`. The standard
:mod:`logging` module, ``print`` and uncaught tracebacks go to the host's log.
"""

from ._agent import Agent, AgentError, Context, context

__all__ = ["Agent", "AgentError", "Context", "context", "WORLD"]

#: The WIT world this SDK is written against.
WORLD = "corral:agent/agent-with-http@0.1.0"

from . import _log

_log.install()
