"""Calling other agents of the same tenant (``grants.agents`` names them).

    from corral import agents

    stats = agents.call("text-stats", "stats", {"text": "Hi there."})
    task = agents.submit_task("text-stats", "stats", {"text": "later"})
    result = agents.wait_task(task, timeout_ms=5_000)   # None while it runs

Each call is an execution of its own, linked to this one. A refusal or failure raises
:class:`~corral.errors.CallError` with the callee's code.
"""

import json
from typing import Any, Optional

from componentize_py_types import Err
from wit_world.imports import agents as wit

from .errors import CallError


def _error(e: Err) -> CallError:
    v = e.value
    if isinstance(v, wit.CallError_Denied):
        return CallError("call_denied", v.value)
    if isinstance(v, wit.CallError_DepthExceeded):
        return CallError("call_depth_exceeded", v.value)
    if isinstance(v, wit.CallError_Cycle):
        return CallError("call_cycle", v.value)
    # refused or failed: the callee's own error, passed through.
    return CallError(v.value.code, v.value.message, v.value.retryable)


def _output(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise CallError("invalid_json", f"the callee's output is not JSON: {e}") from None


def call(agent: str, action: str, input: Any = None) -> Any:
    """Runs ``action`` of ``agent`` with ``input`` and returns its output (parsed JSON)."""
    try:
        return _output(wit.call(agent, action, json.dumps({} if input is None else input)))
    except Err as e:
        raise _error(e) from None


def submit_task(agent: str, action: str, input: Any = None) -> str:
    """Submits ``action`` of ``agent`` as a task; returns the task's id at once."""
    try:
        return wit.submit_task(agent, action, json.dumps({} if input is None else input))
    except Err as e:
        raise _error(e) from None


def wait_task(task_id: str, timeout_ms: int = 0) -> Optional[Any]:
    """Waits up to ``timeout_ms`` for the task: its output, or ``None`` if it still runs."""
    try:
        text = wit.wait_task(task_id, timeout_ms)
    except Err as e:
        raise _error(e) from None
    return None if text is None else _output(text)
