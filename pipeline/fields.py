"""Plain data read back from JSON (a manifest, a student card, a report), checked against the field
types of the dataclass it is rebuilt as.

A file edited by hand or cut short can still be valid JSON with the right keys: without this check a
wrong type ("rows": "many", "classes": 7) surfaces later as a TypeError deep inside a stage. Here it
is one sentence naming the field and the type expected, which the caller wraps with the file's name.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _name(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    return text or str(hint).replace("typing.", "")


def type_problem(cls: type, data: dict, skip: tuple[str, ...] = ()) -> str | None:
    """None if `data` has every required field of `cls` and each field present has its annotated type,
    else a phrase on what is wrong (fields in `skip` are the caller's to check)."""
    required = [f.name for f in dataclasses.fields(cls) if f.name not in skip
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        return f"no {', '.join(missing)}"
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in data and f.name not in skip and not _matches(data[f.name], hints[f.name]):
            shown = repr(data[f.name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"{f.name} is {shown}, expected {_name(hints[f.name])}"
    return None
