"""Key-value state that outlives an invocation (``grants.kv`` in the agent's policy).

    from corral import kv

    kv.set("greeting", b"hello")
    kv.set_json("session", {"user": 7}, ttl_ms=3_600_000)
    kv.get_json("session")        # {"user": 7}, or None
    kv.delete("greeting")         # True if it existed
    list(kv.keys("session/"))     # every key with the prefix, in byte order

Without the grant every call raises :class:`~corral.errors.KvError` ``kv_denied``.
"""

import json
from typing import Any, Iterator, Optional, Union

from componentize_py_types import Err
from wit_world.imports import kv as wit

from .errors import KvError

_CODES = {
    wit.KvError_Denied: ("kv_denied", False),
    wit.KvError_LimitExceeded: ("kv_limit_exceeded", False),
    wit.KvError_InvalidKey: ("kv_invalid_key", False),
    wit.KvError_Unavailable: ("kv_unavailable", True),
}


def _error(e: Err) -> KvError:
    code, retryable = _CODES[type(e.value)]
    return KvError(code, e.value.value, retryable)


def get(key: str) -> Optional[bytes]:
    """The value under ``key``, or ``None``."""
    try:
        return wit.get(key)
    except Err as e:
        raise _error(e) from None


def set(key: str, value: Union[bytes, str], ttl_ms: Optional[int] = None) -> None:
    """Stores ``value`` (text is stored as UTF-8) under ``key``; with ``ttl_ms`` it expires."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    try:
        wit.set(key, data, ttl_ms)
    except Err as e:
        raise _error(e) from None


def delete(key: str) -> bool:
    """Removes ``key``; whether it existed."""
    try:
        return wit.delete(key)
    except Err as e:
        raise _error(e) from None


def get_json(key: str) -> Any:
    """The value under ``key`` parsed as JSON, or ``None``."""
    data = get(key)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        raise KvError("kv_invalid_json", f"the value of {key!r} is not JSON: {e}") from None


def set_json(key: str, value: Any, ttl_ms: Optional[int] = None) -> None:
    """Stores ``value`` as JSON under ``key``."""
    set(key, json.dumps(value, ensure_ascii=False), ttl_ms)


def keys(prefix: str = "", page: int = 100) -> Iterator[str]:
    """Every key that starts with ``prefix``, in byte order, fetched ``page`` at a time."""
    cursor = None
    while True:
        try:
            batch = wit.list_keys(prefix, cursor, page)
        except Err as e:
            raise _error(e) from None
        yield from batch
        if len(batch) < page:
            return
        cursor = batch[-1]
