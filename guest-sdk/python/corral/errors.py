"""The typed errors of the capability wrappers.

Each is an :class:`~corral.AgentError`, so an action that lets one escape fails with
its code (``kv_denied``, ``call_failed``, ``http_request_denied``, …), exactly as the
Rust SDK's errors do.
"""

from ._agent import AgentError


class KvError(AgentError):
    """A key-value call failed: ``kv_denied``, ``kv_limit_exceeded``,
    ``kv_invalid_key``, ``kv_unavailable`` (retryable) or ``kv_invalid_json``."""


class ConfigError(AgentError):
    """A config or secret read failed: ``config_denied`` or ``config_unavailable``."""


class CallError(AgentError):
    """A call to another agent did not return its output: ``call_denied``,
    ``call_depth_exceeded``, ``call_cycle``, or the callee's refusal or failure with its
    own code (``agent_paused``, ``fuel_exhausted``, …) and retryability."""


class HttpError(AgentError):
    """An outbound request failed: ``http_request_denied``,
    ``destination_ip_prohibited``, ``connection_limit_reached``, ``invalid_url``, or
    another ``wasi:http`` error code in snake_case."""


class LlmError(AgentError):
    """A model call returned no answer: ``llm_denied``, ``llm_budget_exhausted``,
    ``llm_rate_limited``, ``llm_provider_error``, ``llm_timeout`` or
    ``llm_invalid_request``."""
