"""Typed input: decoding JSON into an action's type hint, and the JSON Schema of a hint.

Supported hints: ``Any``, ``str``, ``int``, ``float``, ``bool``, ``None``, dataclasses,
``TypedDict``, ``list[T]``, ``dict[str, T]``, ``Optional[T]`` / ``T | None``,
``Union[...]`` and ``Literal[...]``. Unknown fields of an object are ignored, as in the
Rust SDK; missing fields take their default or are an error.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

NO_INPUT = object()


class Mismatch(Exception):
    """The input does not fit the type: the message names where and why."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_typed_dict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__annotations__") and hasattr(hint, "__total__")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def decode(value: Any, hint: Any, path: str) -> Any:
    """``value`` (parsed JSON) as ``hint``, or raises :class:`Mismatch` naming ``path``."""
    if hint is Any or hint is object:
        return value
    if hint is None or hint is type(None):
        if value is not None:
            raise Mismatch(f"{path}: expected null, got {_kind(value)}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise Mismatch(f"{path}: expected a boolean, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise Mismatch(f"{path}: expected an integer, got {_kind(value)}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Mismatch(f"{path}: expected a number, got {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise Mismatch(f"{path}: expected a string, got {_kind(value)}")
        return value
    if dataclasses.is_dataclass(hint):
        return _decode_dataclass(value, hint, path)
    if _is_typed_dict(hint):
        return _decode_typed_dict(value, hint, path)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        if value is None and type(None) in args:
            return None
        problems = []
        for option in args:
            if option is type(None):
                continue
            try:
                return decode(value, option, path)
            except Mismatch as e:
                problems.append(str(e))
        raise Mismatch(problems[0] if len(problems) == 1 else f"{path}: {_kind(value)} fits none of the allowed types")
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args if a == value):
            allowed = ", ".join(repr(a) for a in args)
            raise Mismatch(f"{path}: must be one of {allowed}")
        return value
    if origin in (list, typing.List) or hint is list:
        if not isinstance(value, list):
            raise Mismatch(f"{path}: expected an array, got {_kind(value)}")
        item = args[0] if args else Any
        return [decode(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict) or hint is dict:
        if not isinstance(value, dict):
            raise Mismatch(f"{path}: expected an object, got {_kind(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: decode(v, item, f"{path}.{k}") for k, v in value.items()}
    raise TypeError(f"{path}: the type {hint!r} is not supported for input")


def _decode_dataclass(value: Any, hint: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise Mismatch(f"{path}: expected an object, got {_kind(value)}")
    hints = typing.get_type_hints(hint)
    fields = {}
    for field in dataclasses.fields(hint):
        if not field.init:
            continue
        if field.name in value:
            fields[field.name] = decode(value[field.name], hints.get(field.name, Any), f"{path}.{field.name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise Mismatch(f"{path}.{field.name}: missing")
    return hint(**fields)


def _decode_typed_dict(value: Any, hint: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise Mismatch(f"{path}: expected an object, got {_kind(value)}")
    hints = typing.get_type_hints(hint)
    out = {}
    for name, field_hint in hints.items():
        if name in value:
            out[name] = decode(value[name], field_hint, f"{path}.{name}")
        elif name in hint.__required_keys__:
            raise Mismatch(f"{path}.{name}: missing")
    return out


def encode(value: Any) -> Any:
    """An action's output as plain JSON values (dataclasses become objects)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def schema(hint: Any) -> Any:
    """The JSON Schema of ``hint``, as a dict (``{}`` allows anything)."""
    if hint is Any or hint is object:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = [f for f in dataclasses.fields(hint) if f.init]
        required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        out = {"type": "object", "properties": {f.name: schema(hints.get(f.name, Any)) for f in fields}}
        if required:
            out["required"] = required
        return out
    if _is_typed_dict(hint):
        hints = typing.get_type_hints(hint)
        out = {"type": "object", "properties": {k: schema(v) for k, v in hints.items()}}
        required = [k for k in hints if k in hint.__required_keys__]
        if required:
            out["required"] = required
        return out
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        return {"anyOf": [schema(a) for a in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, typing.List) or hint is list:
        return {"type": "array", "items": schema(args[0])} if args else {"type": "array"}
    if origin in (dict, typing.Dict) or hint is dict:
        out: dict = {"type": "object"}
        if len(args) == 2:
            out["additionalProperties"] = schema(args[1])
        return out
    raise TypeError(f"the type {hint!r} is not supported for input")
