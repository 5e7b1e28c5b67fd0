"""One resolver for every plug point: a registry name or an import path becomes a factory.

    "mlp"                     a name in the project's registry (students.STUDENTS, teachers.TEACHERS)
    "mypkg.models:build"      an attribute of an importable module: the user's own code

Import paths are what cross process boundaries: a Ray actor, a DDP rank or an eval task rebuilds a
model from its card (kind, name or path, keyword args) by resolving the same string again. A
decorator registry filled by the user's own module would be empty in those processes.

Importing the user's module is the user's explicit choice (they named it); nothing here evaluates
a string as code. `code_dir` adds a directory of the user's code to `sys.path` here; Ray workers
get it through the runtime environment (pipeline.run.ray_session).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Callable

import torch.nn as nn

from pipeline.errors import UserError
from teachers.registry import Registry


def is_import_path(spec: str) -> bool:
    return ":" in spec


def add_code_dir(code_dir: str | None) -> None:
    """Make the user's modules in `code_dir` importable in this process (and in the processes it spawns,
    which inherit sys.path)."""
    if not code_dir:
        return
    path = os.path.abspath(code_dir)
    if not os.path.isdir(path):
        raise UserError(f"code_dir {code_dir} is not a directory; expected the directory holding your own modules.")
    if path not in sys.path:
        sys.path.insert(0, path)


def import_object(spec: str, what: str) -> Any:
    """The object `module:attr.attr` names. `what` says which setting gave it, for the error message."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"{what} {spec!r} is not an import path; expected 'package.module:name'.")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UserError(f"{what} {spec!r}: module {exc.name!r} cannot be imported; put your code on PYTHONPATH "
                        "or name its directory in code_dir.") from exc
    except Exception as exc:  # the user's module raised while importing
        raise UserError(f"{what} {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{what} {spec!r}: {module_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    return obj


def resolve_factory(spec: str, registry: Registry, what: str) -> Callable[..., Any]:
    """A factory from a registry name or an import path."""
    if is_import_path(spec):
        factory = import_object(spec, what)
        if not callable(factory):
            raise UserError(f"{what} {spec!r} names a {type(factory).__name__}, not a function or class.")
        return factory
    if spec in registry:
        return registry.factory(spec)
    raise UserError(f"{what} {spec!r} is neither one of the built-in architectures ({', '.join(registry.names())}) "
                    "nor an import path 'package.module:function'.")


def accepts(factory: Callable, name: str) -> bool:
    """Whether `factory` names a keyword argument `name`. A bare **kwargs does not count: the
    factories of torchvision and timm (resnet18(**kwargs)) hand them to the model's class, which
    refuses a keyword it does not know."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins have no signature: pass nothing they might refuse
        return False
    return name in params and params[name].kind is not inspect.Parameter.VAR_POSITIONAL


def build_module(spec: str, registry: Registry, what: str, kwargs: dict, **shape) -> nn.Module:
    """Call the factory `spec` names with `kwargs` and, where it takes them, the `shape` keywords
    (input_shape, num_outputs); return the nn.Module it builds. The user's mistakes become one sentence."""
    factory = resolve_factory(spec, registry, what)
    call_kwargs = {k: v for k, v in shape.items() if accepts(factory, k)} | dict(kwargs)
    try:
        model = factory(**call_kwargs)
    except Exception as exc:
        raise UserError(f"{what} {spec!r} raised {type(exc).__name__} when built with {_show(call_kwargs)}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"{what} {spec!r} returned a {type(model).__name__}; expected a torch.nn.Module.")
    return model


def _show(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
