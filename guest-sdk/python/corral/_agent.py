"""The agent definition, the exported handler and the error type."""

from __future__ import annotations

import dataclasses
import inspect
import json
import traceback
import typing
from typing import Any, Callable, Optional

from . import _log, _typed

from wit_world import exports
from wit_world.imports import corral_agent_types as wit
from componentize_py_types import Err


class AgentError(Exception):
    """An expected failure: bad input, a missing record, a refused request.

    The host records the outcome ``agent_error`` (``invalid_input`` when ``code`` is
    ``invalid_input``) and hands ``code``, ``message`` and ``retryable`` to the caller.
    """

    def __init__(self, code: str, message: str, retryable: bool = False):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable

    @classmethod
    def invalid_input(cls, message: str) -> "AgentError":
        return cls("invalid_input", message)


@dataclasses.dataclass(frozen=True)
class Context:
    """What the host knows about the invocation being served."""

    execution_id: str
    agent_name: str
    agent_version: str
    correlation_id: Optional[str]


_current: Optional[Context] = None


def context() -> Context:
    """The current invocation's context (only valid inside an action)."""
    if _current is None:
        raise RuntimeError("context() is only available while an action runs")
    return _current


# Exceptions that mean the interpreter itself is in trouble: they are not turned into
# agent errors, so the host records the crash (and, for memory, the limit that caused it).
_CRASHES = (MemoryError, RecursionError, SystemError)


@dataclasses.dataclass
class _Action:
    name: str
    description: str
    function: Callable[..., Any]
    hint: Any  # the input's type, or _typed.NO_INPUT
    schema: Optional[str]


class Agent:
    """An agent: its name, version, description and actions."""

    def __init__(self, name: str, version: str, description: str = ""):
        self.name = name
        self.version = version
        self.description = description
        self._actions: dict[str, _Action] = {}

    def action(
        self,
        function: Optional[Callable[..., Any]] = None,
        *,
        name: Optional[str] = None,
        description: Optional[str] = None,
        schema: Optional[dict] = None,
    ):
        """Marks a function as an action (usable bare or with keyword arguments).

        ``name`` defaults to the function's name, ``description`` to its docstring's
        first line, and ``schema`` (a JSON Schema as a dict) to one derived from the
        input's type hint.
        """

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            action_name = name or f.__name__
            if action_name in self._actions:
                raise ValueError(f"action {action_name!r} is defined twice")
            hint = _input_hint(f)
            derived = None if hint is _typed.NO_INPUT else _typed.schema(hint)
            text = schema if schema is not None else derived
            doc = (inspect.getdoc(f) or "").strip().splitlines()
            self._actions[action_name] = _Action(
                name=action_name,
                description=description if description is not None else (doc[0] if doc else ""),
                function=f,
                hint=hint,
                schema=json.dumps(text) if text is not None else None,
            )
            return f

        return register(function) if function is not None else register

    def describe(self) -> wit.AgentInfo:
        return wit.AgentInfo(
            name=self.name,
            version=self.version,
            description=self.description,
            actions=[
                wit.ActionInfo(name=a.name, description=a.description, input_schema=a.schema)
                for a in self._actions.values()
            ],
        )

    def call(self, invocation: wit.Invocation) -> str:
        """Runs one invocation: the output as JSON text, or raises ``Err(agent-error)``."""
        global _current
        c = invocation.context
        _current = Context(c.execution_id, c.agent_name, c.agent_version, c.correlation_id)
        try:
            return self._run(invocation.action, invocation.input)
        except AgentError as e:
            raise Err(wit.AgentError(code=e.code, message=e.message, retryable=e.retryable))
        except _CRASHES:
            raise
        except Exception as e:  # the agent's bug: a clean error, with the traceback logged
            _log.error("uncaught exception in action %r:\n%s" % (invocation.action, traceback.format_exc()))
            raise Err(
                wit.AgentError(
                    code="uncaught_exception",
                    message=f"{type(e).__name__}: {e}",
                    retryable=False,
                )
            )
        finally:
            _log.flush()
            _current = None

    def _run(self, action_name: str, input_text: str) -> str:
        action = self._actions.get(action_name)
        if action is None:
            known = ", ".join(sorted(self._actions)) or "none"
            raise AgentError("unknown_action", f"{self.name} has no action {action_name!r} (it has: {known})")
        if action.hint is _typed.NO_INPUT:
            output = action.function()
        else:
            try:
                raw = json.loads(input_text)
            except ValueError as e:
                raise AgentError.invalid_input(f"the input is not JSON: {e}")
            try:
                value = _typed.decode(raw, action.hint, "input")
            except _typed.Mismatch as e:
                raise AgentError.invalid_input(str(e))
            output = action.function(value)
        try:
            return json.dumps(_typed.encode(output), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise AgentError("invalid_output", f"action {action_name!r} returned what JSON cannot hold: {e}")

    def handler(self) -> type:
        """The class componentize-py exports as ``handler``: assign it to ``Handler``."""
        agent = self

        class Handler(exports.Handler):
            def call(self, invocation: wit.Invocation) -> str:
                return agent.call(invocation)

            def describe(self) -> wit.AgentInfo:
                return agent.describe()

        return Handler


def _input_hint(f: Callable[..., Any]) -> Any:
    parameters = list(inspect.signature(f).parameters.values())
    if not parameters:
        return _typed.NO_INPUT
    if len(parameters) > 1:
        raise TypeError(f"action {f.__name__!r} must take one argument (its input), or none")
    hints = typing.get_type_hints(f)
    return hints.get(parameters[0].name, Any)
