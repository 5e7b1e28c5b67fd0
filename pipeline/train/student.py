"""A student on disk: safetensors weights plus its card, and rebuilding it in any process.

The card records what another process (a DDP rank, an eval task, a sweep trial) needs to rebuild
the student: its factory (a registry name or an import path) and the keyword args it was built
with, the input shape and the outputs. Built-in students get width and depth as keyword args too.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields

import torch
from safetensors.torch import save as save_safetensors

from pipeline.config import StudentConfig
from pipeline.errors import UserError
from pipeline.fields import type_problem
from pipeline.resolve import accepts, build_module, is_import_path, resolve_factory
from pipeline.run import rundir, storage
from students import STUDENTS
from students.scale import OutputScale
from teachers.weights import load_weights_strictly, state_dict_from_bytes

STUDENT_ARCH = "student.arch"


@dataclass
class StudentCard:
    arch: str
    kwargs: dict  # keyword args of the factory, besides input_shape and num_outputs
    input_shape: list[int]
    classes: list[str]
    params: int
    teacher_fingerprint: str
    epochs: int
    steps: int
    train_agreement: float | None
    heldout_agreement: float | None
    input_space: str = "images"
    task: str = "classification"
    parameters: list | None = None  # vectors: the box the inputs came from
    target_mean: list | None = None  # regression: the standardisation of the outputs (students.scale)
    target_std: list | None = None
    target_transform: dict | None = None  # regression: {"name", "value", "reason"} applied before standardising
    extra: dict = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "StudentCard":
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if not isinstance(data, dict) or not required <= set(data):
            missing = sorted(required - set(data)) if isinstance(data, dict) else sorted(required)
            raise UserError(f"{source} is not a student card this version reads (missing {', '.join(missing)}): "
                            "train the student again.")
        problem = type_problem(cls, data)
        if problem:
            raise UserError(f"{source} is not a student card this version reads ({problem}): train the student again.")
        return cls(**{k: v for k, v in data.items() if k in names})


def student_kwargs(s: StudentConfig, target_shape: list | None = None) -> dict:
    """The factory's keyword args: built-ins take width and depth; your own factory takes kwargs alone.
    Targets that are fields add their shape, output_shape=[C', *grid], where the factory takes it (a
    neural operator does; an MLP sees only the flat outputs)."""
    kwargs = dict(s.kwargs) if is_import_path(s.arch) else {"width": s.width, "depth": s.depth, **s.kwargs}
    factory = resolve_factory(s.arch, STUDENTS, STUDENT_ARCH)
    if s.activation is not None and not is_import_path(s.arch) and accepts(factory, "activation"):
        kwargs.setdefault("activation", s.activation)
    if target_shape and accepts(factory, "output_shape"):
        kwargs["output_shape"] = list(target_shape)
    return kwargs


def check_student_arch(s: StudentConfig) -> None:
    """Refuse a student.arch that names nothing, before any stage spends time on the run."""
    resolve_factory(s.arch, STUDENTS, STUDENT_ARCH)


def build_student(arch: str, kwargs: dict, input_shape, num_outputs: int) -> torch.nn.Module:
    return build_module(arch, STUDENTS, STUDENT_ARCH, kwargs, input_shape=tuple(input_shape), num_outputs=num_outputs)


def student_weights_path(student_dir: str) -> str:
    return storage.join(student_dir, rundir.STUDENT_WEIGHTS)


def student_card_path(student_dir: str) -> str:
    return storage.join(student_dir, rundir.STUDENT_CARD)


def save_weights(student: torch.nn.Module, student_dir: str) -> None:
    state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in student.state_dict().items()}
    storage.write_bytes_atomic(student_weights_path(student_dir), save_safetensors(state))


def save_card(card: StudentCard, student_dir: str) -> None:
    storage.write_bytes_atomic(student_card_path(student_dir), (json.dumps(asdict(card), indent=2) + "\n").encode())


def read_card(student_dir: str) -> StudentCard:
    path = student_card_path(student_dir)
    if not storage.exists(path):
        raise UserError(f"No trained student in {student_dir}: run the train stage first (expected {path}).")
    return StudentCard.from_dict(storage.read_json(path), path)


def student_from(card: StudentCard, weights: bytes, source: str = rundir.STUDENT_WEIGHTS) -> torch.nn.Module:
    """A trained student, in eval mode, from its card and safetensors bytes: it takes decoded inputs
    (pipeline.inputs.space) and returns logits, or a regression's physical values."""
    student = build_student(card.arch, card.kwargs, card.input_shape, card.num_outputs)
    try:
        student = load_weights_strictly(student, state_dict_from_bytes(weights, source), source,
                                        f"student {card.arch!r} with {card.kwargs}")
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if card.target_mean is not None:  # regression: outputs back in physical units
        transform = card.target_transform or {}
        channels = transform.get("channels")
        if channels:  # one transform per output channel
            scale = OutputScale(card.target_mean, card.target_std, [c["name"] for c in channels],
                                [c["value"] for c in channels])
        else:
            scale = OutputScale(card.target_mean, card.target_std, transform.get("name", "none"),
                                transform.get("value", 1.0))
        student = torch.nn.Sequential(student, scale).eval()
    return student


def transform_record(scale: OutputScale | None) -> dict | None:
    """The card's record of a regression's target transform (None without an output scale):
    {"name", "value", "reason"}, or, when output channels differ, {"name": "per channel",
    "channels": [{"name", "value", "reason"}, ...], "reason"}."""
    if scale is None:
        return None
    reason = getattr(scale, "reason", "")
    if scale.per_channel is None:
        return {"name": scale.transform, "value": scale.value, "reason": reason}
    reasons = getattr(scale, "reasons", None) or [""] * len(scale.transforms)
    return {"name": "per channel", "reason": reason,
            "channels": [{"name": n, "value": v, "reason": r} for (n, v), r in zip(scale.transforms, reasons)]}


def describe_scale(scale: OutputScale) -> str:
    from pipeline.tasks.target_transforms import transform_words

    record = transform_record(scale)
    if scale.per_channel is None:
        return f"target transform {transform_words(scale.transform, scale.value)} ({record['reason']})"
    return "target transforms per output channel: " + "; ".join(
        f"{transform_words(c['name'], c['value'])} ({c['reason']})" for c in record["channels"])


def load_student_dir(student_dir: str) -> tuple[torch.nn.Module, StudentCard, bytes]:
    """A trained student from its folder (the run's, or one trial of a sweep): module, card, weights."""
    card = read_card(student_dir)
    path = student_weights_path(student_dir)
    weights = storage.read_bytes(path)
    return student_from(card, weights, path), card, weights
