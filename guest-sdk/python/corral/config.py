"""Configuration and secrets the operator set for this agent.

    from corral import config

    greeting = config.get("greeting", "Hello")    # a plain value, or the default
    token = config.secret("API_TOKEN")            # needs grants.secrets: ["API_TOKEN"]

A secret that is not granted raises :class:`~corral.errors.ConfigError`
``config_denied``; an unset one is ``None``.
"""

from typing import Optional

from componentize_py_types import Err
from wit_world.imports import config as wit

from .errors import ConfigError


def _error(e: Err) -> ConfigError:
    if isinstance(e.value, wit.ConfigError_Denied):
        return ConfigError("config_denied", e.value.value)
    return ConfigError("config_unavailable", e.value.value, retryable=True)


def get(name: str, default: Optional[str] = None) -> Optional[str]:
    """The config value ``name``, or ``default`` when the operator set none."""
    try:
        value = wit.get(name)
    except Err as e:
        raise _error(e) from None
    return default if value is None else value


def secret(name: str) -> Optional[str]:
    """The secret ``name`` if it is set (``None`` if not); it must be granted."""
    try:
        return wit.get_secret(name)
    except Err as e:
        raise _error(e) from None
