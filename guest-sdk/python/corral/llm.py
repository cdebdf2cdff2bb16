"""Calls to language models the operator configured, by the alias the policy grants
(``grants.llm``). Every call is metered, priced and counted against budgets by the host.

    from corral import llm

    answer = llm.chat("fast", [llm.system("Answer yes or no."), llm.user("Is this spam?")],
                      max_tokens=5)
    answer.content, answer.usage.input_tokens

A call with no answer raises :class:`~corral.errors.LlmError` (``llm_denied``,
``llm_budget_exhausted``, ``llm_rate_limited``, ``llm_provider_error``,
``llm_timeout``, ``llm_invalid_request``).
"""

import json
from typing import Any, Optional, Sequence

from componentize_py_types import Err
from wit_world.imports import llm as wit
from wit_world.imports.llm import ChatResponse, Message, Tool, ToolCall, Usage

from .errors import LlmError

__all__ = ["chat", "system", "user", "assistant", "tool_result", "tool",
           "ChatResponse", "Message", "Tool", "ToolCall", "Usage"]


def system(content: str) -> Message:
    return Message(role=wit.Role.SYSTEM, content=content, tool_calls=[], tool_call_id=None)


def user(content: str) -> Message:
    return Message(role=wit.Role.USER, content=content, tool_calls=[], tool_call_id=None)


def assistant(content: str, tool_calls: Sequence[ToolCall] = ()) -> Message:
    return Message(role=wit.Role.ASSISTANT, content=content, tool_calls=list(tool_calls), tool_call_id=None)


def tool_result(call_id: str, content: str) -> Message:
    """The answer to the model's tool call ``call_id``."""
    return Message(role=wit.Role.TOOL, content=content, tool_calls=[], tool_call_id=call_id)


def tool(name: str, description: str, parameters: Any) -> Tool:
    """A tool the model may call; ``parameters`` is a JSON Schema (dict or JSON text)."""
    text = parameters if isinstance(parameters, str) else json.dumps(parameters)
    return Tool(name=name, description=description, parameters=text)


def _error(e: Err) -> LlmError:
    v = e.value
    if isinstance(v, wit.LlmError_ProviderError):
        return LlmError("llm_provider_error", v.value.message, v.value.retryable)
    code = {
        wit.LlmError_Denied: "llm_denied",
        wit.LlmError_BudgetExhausted: "llm_budget_exhausted",
        wit.LlmError_RateLimited: "llm_rate_limited",
        wit.LlmError_Timeout: "llm_timeout",
        wit.LlmError_InvalidRequest: "llm_invalid_request",
    }[type(v)]
    return LlmError(code, v.value, retryable=code in ("llm_rate_limited", "llm_timeout"))


def chat(model: str, messages: Sequence[Message], *, tools: Sequence[Tool] = (),
         max_tokens: Optional[int] = None, temperature: Optional[float] = None,
         json_answer: bool = False) -> ChatResponse:
    """Sends one chat request to ``model`` (an alias) and waits for the whole answer."""
    request = wit.ChatRequest(
        model=model,
        messages=list(messages),
        tools=list(tools),
        max_tokens=max_tokens,
        temperature=temperature,
        response_format=wit.ResponseFormat.JSON if json_answer else wit.ResponseFormat.TEXT,
    )
    try:
        return wit.chat(request)
    except Err as e:
        raise _error(e) from None
