"""Rebuilding a teacher in any process (the driver, a Ray labeling actor, an eval task) from its card.

The card says the kind and the code identity; the run directory holds the weights or program
(DIR/teacher/teacher.{safetensors,pt2,onnx}); a callable has none. Before use, the fingerprint is
recomputed from what was read, so a teacher changed after it was saved is refused.
"""

from __future__ import annotations

import functools
import inspect
import io
import logging

import torch

from pipeline.errors import UserError
from pipeline.resolve import build_module, import_object
from pipeline.run import rundir, storage
from teachers import TEACHERS, CallableTeacher, OnnxTeacher, TeacherCard, TorchTeacher, compute_fingerprint
from teachers.weights import load_weights_strictly, state_dict_from_bytes
from teachers.wrappers import exported_module, with_preprocess

TEACHER_ARCH = "teacher.arch"


def torch_module(card: TeacherCard, weights: bytes | None, name: str) -> torch.nn.Module:
    """A torch-kind teacher's module; with `weights`, loaded strictly (ValueError when they do not fit)."""
    module = build_module(card.arch, TEACHERS, TEACHER_ARCH, card.kwargs, input_shape=tuple(card.input_shape),
                          num_outputs=card.num_outputs)
    if weights is None:
        return module
    described = f"teacher {card.arch!r} with {card.kwargs or 'no kwargs'}"
    return load_weights_strictly(module, state_dict_from_bytes(weights, name), name, described)


def exported_program(content: bytes, name: str):
    quiet = logging.getLogger("torch.export")  # it logs a file it cannot read with a traceback, then raises
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return torch.export.load(io.BytesIO(content))
    except Exception as exc:
        raise UserError(f"{name} is not a torch.export program that loads here ({type(exc).__name__}: {exc}); "
                        "save one with torch.export.save(torch.export.export(model, (example,)), path).") from exc
    finally:
        quiet.setLevel(level)


def onnx_teacher(content: bytes, name: str, threads: int = 0) -> OnnxTeacher:
    try:
        return OnnxTeacher(content, threads)
    except Exception as exc:  # onnxruntime: InvalidProtobuf, InvalidGraph, NotImplemented, ...
        raise UserError(f"{name} is not an ONNX model that onnxruntime can run ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}).") from exc


def callable_target(spec: str, kwargs: dict):
    """The function a callable teacher calls per batch: a function with kwargs bound, or an instance
    of a class built with kwargs (Ray's callable-class shape: load in __init__, compute in __call__)."""
    obj = import_object(spec, TEACHER_ARCH)
    if inspect.isclass(obj):
        try:
            return obj(**kwargs)
        except Exception as exc:
            raise UserError(f"{TEACHER_ARCH} {spec!r} raised {type(exc).__name__} when built with {kwargs}: {exc}") from exc
    if not callable(obj):
        raise UserError(f"{TEACHER_ARCH} {spec!r} names a {type(obj).__name__}, not a function or class.")
    return functools.partial(obj, **kwargs) if kwargs else obj


def declared_version(target) -> str | None:
    """A callable's declared version (attribute `version` or `__version__`, on it or its module)."""
    func = getattr(target, "func", target)  # through functools.partial
    for holder in (func, type(func), inspect.getmodule(func)):
        for attr in ("version", "__version__"):
            value = getattr(holder, attr, None)
            if isinstance(value, (str, int, float)):
                return str(value)
    return None


def wrap(card: TeacherCard, content: bytes | None, name: str, device: str = "cpu", bf16: bool = False,
         threads: int = 0):
    """The teacher as a numpy-batch callable (teachers.wrappers), on `device` where it is a torch one,
    behind its card's own preprocessing."""
    if card.kind == "torch":
        try:
            module = torch_module(card, content, name)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        teacher = TorchTeacher(module.eval(), device, bf16)
    elif card.kind == "export":
        teacher = TorchTeacher(exported_module(exported_program(content, name)), device, bf16)
    elif card.kind == "onnx":
        teacher = onnx_teacher(content, name, threads)
    else:
        teacher = CallableTeacher(callable_target(card.arch, card.kwargs))
    return preprocessed(teacher, card)


def preprocessed(teacher, card: TeacherCard):
    """`teacher` behind the normalisation its card declares (UserError when it does not fit the inputs)."""
    try:
        return with_preprocess(teacher, card.preprocess, card.input_shape[0] if card.input_shape else 1)
    except ValueError as exc:
        raise UserError(f"teacher.mean / teacher.std: {exc}.") from exc


def teacher_file(paths: rundir.RunPaths, card: TeacherCard) -> str | None:
    return storage.join(paths.teacher_dir, card.file_name) if card.file_name else None


def read_card(paths: rundir.RunPaths) -> TeacherCard:
    if not storage.exists(paths.teacher_card):
        raise UserError(f"No teacher in {paths.root}: run the teacher stage first (expected {paths.teacher_card}).")
    try:
        return TeacherCard.from_dict(storage.read_json(paths.teacher_card), "it")
    except (ValueError, TypeError) as exc:
        raise UserError(f"{paths.teacher_card} is not a teacher card this version reads ({exc}).") from exc


def read_content(paths: rundir.RunPaths, card: TeacherCard) -> bytes | None:
    """The teacher's weights or program, checked against the card's fingerprint."""
    path = teacher_file(paths, card)
    content = storage.read_bytes(path) if path else None
    if compute_fingerprint(card, content) != card.fingerprint:
        raise UserError(f"{path or paths.teacher_card} does not match the fingerprint in {paths.teacher_card}: "
                        "the teacher was changed after it was saved.")
    return content


def load_teacher(paths: rundir.RunPaths, device: str = "cpu", bf16: bool = False, threads: int = 0):
    """The run's teacher as a numpy-batch callable, and its card."""
    card = read_card(paths)
    content = read_content(paths, card)
    return wrap(card, content, teacher_file(paths, card) or card.arch, device, bf16, threads), card
