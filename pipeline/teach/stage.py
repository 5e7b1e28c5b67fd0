"""The teacher stage: train a teacher on labeled seed data, or bring in the user's own.

Output: DIR/teacher/teacher.json (the card) and, for every kind but a callable, the weights or
program beside it (teacher.safetensors, teacher.pt2, teacher.onnx). The card is written last, so
its presence means the teacher is complete; a rerun reuses it.

An imported teacher is checked before anything is written: it is built (the user's factory, the
program, the ONNX session, the callable), its declared input shape is compared with the seed data's,
and it is run on two seed inputs, which must give one row of K outputs each, with K the number of
classes where the data has labels. Each failure is one sentence naming the setting or file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from pipeline.config import Config
from pipeline.tasks import get_task
from pipeline.errors import UserError
from pipeline.inputs import images, space
from pipeline.inputs.images import augment
from pipeline.inputs.seeds import PROBE_ROWS, SeedData, load_seed
from pipeline.resolve import add_code_dir, is_import_path
from pipeline.run import output, rundir, storage
from pipeline.run.lock import locked
from pipeline.teach.load import (
    callable_target, declared_version, exported_program, onnx_teacher, preprocessed, read_card, read_content,
    teacher_file, torch_module, wrap,
)
from teachers import TeacherCard, TorchTeacher, accuracy, compute_fingerprint, count_parameters, train_teacher
from teachers.weights import state_dict_from_bytes, weights_to_bytes
from teachers.card import checked_preprocess
from teachers.wrappers import Normalize, exported_input_shape

log = logging.getLogger(__name__)


@dataclass
class TeacherResult:
    card: TeacherCard
    action: str  # "trained", "imported" or "reused"
    path: str  # the card


def teacher_kind(cfg: Config) -> str:
    t = cfg.teacher
    if t.kind != "auto":
        return t.kind
    suffix = os.path.splitext(t.checkpoint or "")[1].lower()
    return {".pt2": "export", ".onnx": "onnx"}.get(suffix, "torch")


def _decode(seed: SeedData):
    return space.numpy_decoder(seed.space, seed.input_shape)


def _factory_kwargs(cfg: Config) -> dict:
    """A built-in architecture takes the config's width; the user's own factory takes kwargs alone."""
    t = cfg.teacher
    return dict(t.kwargs) if is_import_path(t.arch) else {"width": t.width, **t.kwargs}


def _probe(teacher, card: TeacherCard, seed: SeedData, source: str) -> int:
    """Run the teacher on a few seed inputs; return its number of outputs."""
    x = _decode(seed)(seed.train_images[:PROBE_ROWS])
    try:
        out = np.asarray(teacher(x))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{source} failed on a batch of seed inputs of shape {list(x.shape)}: "
                        f"{type(exc).__name__}: {exc}") from exc
    if out.ndim != 2 or out.shape[0] != len(x):
        raise UserError(f"{source} returned shape {list(out.shape)} for {len(x)} inputs; expected [{len(x)}, K]: "
                        "one row of class scores (logits) per input.")
    return int(out.shape[1])


def _check_declared_shape(declared: list | None, seed: SeedData, source: str) -> None:
    if declared is None:
        return
    data = list(seed.input_shape)
    if len(declared) != len(data) or any(d is not None and d != e for d, e in zip(declared, data)):
        shown = ["?" if d is None else d for d in declared]
        raise UserError(f"{source} takes inputs of shape {shown} but the seed data's inputs have shape {data}: "
                        "resize the data (teacher.image_size) or export the teacher for that shape.")


def _classes(seed: SeedData, outputs: int, source: str) -> list[str]:
    if seed.classes is None:
        return [str(i) for i in range(outputs)]  # unlabeled data, a simulator: outputs have no names
    if outputs != len(seed.classes):
        raise UserError(f"{source} gives {outputs} outputs per input but the seed data has {len(seed.classes)} "
                        "classes; expected one logit per class.")
    return list(seed.classes)


# What each key of a card beside a checkpoint must be, said as the error says it.
CARD_KEYS = {
    "arch": (lambda v: isinstance(v, str), "a string (a registry name or 'package.module:factory')"),
    "kwargs": (lambda v: isinstance(v, dict), "an object of keyword arguments"),
    "width": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "input_shape": (lambda v: isinstance(v, list) and all(isinstance(d, int) or d is None for d in v),
                    "a list of integers, e.g. [3, 32, 32]"),
    "classes": (lambda v: isinstance(v, list), "a list of class names"),
}


def _card_beside(path: str) -> dict:
    card_path = os.path.splitext(path)[0] + ".json"
    if not storage.exists(card_path):
        return {}
    data = storage.read_json(card_path)
    if not isinstance(data, dict):
        raise UserError(f"{card_path} holds a JSON {type(data).__name__}; expected an object (arch, kwargs, ...).")
    for key, (ok, expected) in CARD_KEYS.items():
        if key in data and not ok(data[key]):
            raise UserError(f"{card_path}: {key} is {json.dumps(data[key])[:60]}; expected {expected}.")
    return data


def _arch_and_kwargs(cfg: Config, beside: dict) -> tuple[str, dict, str]:
    """A torch checkpoint's arch and kwargs, from the card beside it where it says them, else the config.

    Kwargs go with the arch they were written for: when the card's arch differs from the config's,
    the card's kwargs build it (none: the factory's defaults), never the config's, which were meant
    for the config's arch (a built-in's width, say). When both name one arch and both give kwargs, they
    must agree (a one-sentence error otherwise): both claim to describe the saved weights, and a silent
    pick could build a network other than the saved one, or fail later with a less telling message.
    teacher.width has a default, so it never counts as such a claim. Also returns a line saying which
    source won, logged once the teacher is accepted (a refused one gets its error line alone)."""
    t = cfg.teacher
    card_path = os.path.splitext(t.checkpoint)[0] + ".json"
    aside = ""
    arch = beside.get("arch", t.arch)
    card_kwargs = beside.get("kwargs", {"width": beside["width"]} if "width" in beside else None)
    if arch != t.arch:
        kwargs, source = dict(card_kwargs or {}), "arch and kwargs from the card"
        aside = f" (not teacher.arch {t.arch!r} and its kwargs)"
    elif card_kwargs is None:
        kwargs = _factory_kwargs(cfg)
        source = "arch from the card, kwargs from the config" if "arch" in beside else "arch and kwargs from the config"
    else:
        differ = {k: v for k, v in t.kwargs.items() if k not in card_kwargs or card_kwargs[k] != v}
        if differ:
            raise UserError(f"teacher.kwargs {json.dumps(differ, default=str)} differ from the kwargs "
                            f"{json.dumps(card_kwargs)} in {card_path}, which describe the weights in {t.checkpoint}; "
                            "drop them from the config or correct the card.")
        kwargs = dict(card_kwargs)
        source = "arch and kwargs from the card" if "arch" in beside else "arch from the config, kwargs from the card"
    where = f"beside {t.checkpoint}" if beside else f"(no card {card_path})"
    return arch, kwargs, f"teacher: {source} {where}: {arch} with {json.dumps(kwargs, default=str)}{aside}"


def _import(cfg: Config, seed: SeedData, kind: str) -> tuple[bytes | None, TeacherCard, object]:
    """The user's teacher: its stored content, card, and the callable that runs it."""
    t = cfg.teacher
    content: bytes | None = None
    source = f"teacher.checkpoint {t.checkpoint}" if t.checkpoint else f"teacher.arch {t.arch!r}"
    card = TeacherCard(kind=kind, input_shape=list(seed.input_shape), classes=[], dataset=t.dataset)
    declared, note, beside = None, None, {}
    if kind != "callable":
        if not t.checkpoint:
            raise UserError(f"teacher.kind {kind} needs teacher.checkpoint: the {'program' if kind == 'export' else 'model'} file.")
        if not storage.exists(t.checkpoint):
            raise UserError(f"teacher.checkpoint {t.checkpoint} does not exist; expected a .safetensors (or .pt), "
                            ".pt2 or .onnx teacher file.")
        content = storage.read_bytes(t.checkpoint)
        beside = _card_beside(t.checkpoint)
    card.preprocess = _preprocess(cfg, beside)
    if kind == "torch":
        card.arch, card.kwargs, note = _arch_and_kwargs(cfg, beside)
        declared = beside.get("input_shape")
        if beside.get("classes") and seed.classes is None:
            seed.classes = [str(c) for c in beside["classes"]]
        try:
            state = state_dict_from_bytes(content, t.checkpoint)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        card.classes = list(seed.classes) if seed.classes else [str(i) for i in range(_last_dim(state))]
        content = save_safetensors({k: v.contiguous() for k, v in state.items()})  # a .pt is kept as safetensors
        teacher = wrap(card, content, t.checkpoint)
    elif kind == "export":
        program = exported_program(content, t.checkpoint)
        declared = exported_input_shape(program)
        teacher = wrap(card, content, t.checkpoint)
    elif kind == "onnx":
        teacher = onnx_teacher(content, t.checkpoint)
        declared = teacher.input_shape
        if teacher.num_inputs != 1:
            raise UserError(f"{source} has {teacher.num_inputs} inputs; expected one (a batch of inputs).")
        teacher = preprocessed(teacher, card)
    else:
        card.arch, card.kwargs = t.arch, dict(t.kwargs)
        target = callable_target(t.arch, card.kwargs)
        card.version = declared_version(target)
        teacher = wrap(card, None, t.arch)
    _check_declared_shape(declared, seed, source)
    card.classes = _classes(seed, _probe(teacher, card, seed, source), source)
    card.output_shape = getattr(teacher, "output_shape", None)
    if kind == "torch":  # rebuilt with the final class count, as every other process will
        teacher = wrap(card, content, t.checkpoint)
    if note:
        log.info(note)
    return content, card, teacher


def _preprocess(cfg: Config, beside: dict) -> dict | None:
    """The teacher's own normalisation: teacher.mean / teacher.std, else the card beside its checkpoint
    ("preprocess": {"mean", "std"}, or "mean" and "std" keys), else none."""
    t = cfg.teacher
    if t.mean is not None:
        return {"mean": [float(v) for v in t.mean], "std": [float(v) for v in t.std]}
    declared = beside.get("preprocess") or ({"mean": beside["mean"], "std": beside.get("std")} if "mean" in beside else None)
    if declared is None:
        return None
    try:
        return checked_preprocess(declared, os.path.splitext(t.checkpoint)[0] + ".json")
    except ValueError as exc:
        raise UserError(f"{exc}.") from exc


def _last_dim(state: dict) -> int:
    """The output size of a classifier's state dict: its last weight's first dimension (a guess the
    probe then checks)."""
    last = [v for k, v in state.items() if k.endswith("weight") and v.ndim >= 1]
    return int(last[-1].shape[0]) if last else 1


def _train(cfg: Config, seed: SeedData) -> tuple[bytes, TeacherCard, object]:
    t = cfg.teacher
    if not seed.labeled:
        raise UserError(f"teacher.dataset {t.dataset} has no labels, so no teacher can be trained on it: give your "
                        "trained teacher in teacher.checkpoint (or teacher.kind callable).")
    card = TeacherCard(kind="torch", arch=t.arch, kwargs=_factory_kwargs(cfg), input_shape=list(seed.input_shape),
                       classes=list(seed.classes), dataset=t.dataset, preprocess=_preprocess(cfg, {}))
    normalize = torch.nn.Identity()
    if card.preprocess:  # trained on its inputs as it will be called on them: behind its own normalisation
        try:
            normalize = Normalize(card.preprocess["mean"], card.preprocess["std"], seed.input_shape[0])
        except ValueError as exc:
            raise UserError(f"teacher.mean / teacher.std: {exc}.") from exc
    torch.manual_seed(t.seed)  # the initial weights too: the same config trains the same teacher
    model = torch_module(card, None, t.arch)
    bar = output.Progress(f"teacher {t.arch} ({count_parameters(model):,} params)", t.epochs, "epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.update(1, loss=loss)

    try:
        train_teacher(model, seed.train_images, seed.train_labels, len(seed.classes), images.to_float, t.epochs,
                      t.batch_size, t.lr, t.seed, augment=lambda x, g: normalize(augment(x, g, cfg.data)),
                      mixup_alpha=t.mixup_alpha, on_epoch=on_epoch)
    except RuntimeError as exc:  # the user's architecture does not fit the data (shapes, dtypes)
        raise UserError(f"teacher.arch {t.arch!r} failed while training on inputs {list(seed.input_shape)}: {exc}") from exc
    bar.close()
    content = weights_to_bytes(model)
    return content, card, wrap(card, content, t.arch)


def parameter_count(teacher, onnx_model: bytes | None) -> int | None:
    """Parameters of a torch teacher, or the initializer values of an ONNX one; None for a callable."""
    if isinstance(teacher, TorchTeacher):
        return count_parameters(teacher.module)
    if onnx_model is not None:
        import onnx

        return int(sum(np.prod(t.dims, dtype=np.int64) for t in onnx.load_model_from_string(onnx_model).graph.initializer))
    return None


@locked
def run_teacher_stage(cfg: Config) -> TeacherResult:
    paths = rundir.prepare(cfg, create=True)
    add_code_dir(cfg.code_dir)
    if storage.exists(paths.teacher_card):
        card = read_card(paths)
        read_content(paths, card)  # refuses a teacher changed since
        rundir.record(cfg)  # a directory given a teacher by hand starts its run here
        return TeacherResult(card, "reused", paths.teacher_card)
    seed = load_seed(cfg)
    kind = teacher_kind(cfg)
    imported = cfg.teacher.checkpoint is not None or kind != "torch"
    content, card, teacher = _import(cfg, seed, kind) if imported else _train(cfg, seed)
    if seed.test_labels is not None and get_task(cfg.task.kind).measures_accuracy:
        card.test_accuracy = accuracy(teacher, _decode(seed)(seed.test_images), seed.test_labels)
    card.params = parameter_count(teacher, content if kind == "onnx" else None)
    card.fingerprint = compute_fingerprint(card, content)
    rundir.record(cfg)
    if card.file_name:
        storage.write_bytes_atomic(teacher_file(paths, card), content)
    storage.write_bytes_atomic(paths.teacher_card, (json.dumps(card.to_dict(), indent=2) + "\n").encode())
    return TeacherResult(card, "imported" if imported else "trained", paths.teacher_card)

