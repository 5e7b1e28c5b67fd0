"""A teacher on disk: safetensors weights plus a small JSON card.

The card says how to rebuild the module (architecture, width, input shape, classes) and carries
the fingerprint, the sha256 of the weights file, which every shard records so that shards labeled by
different teachers are never mixed. Weights are never unpickled: safetensors, or for `.pt` files
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from teachers.models import TEACHERS


@dataclass
class TeacherCard:
    arch: str
    input_shape: list[int]  # [C, H, W]
    classes: list[str]
    width: int = 32
    fingerprint: str = ""  # sha256 of the weights file
    test_accuracy: float | None = None
    dataset: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "teacher card") -> "TeacherCard":
        missing = [k for k in ("arch", "input_shape", "classes") if k not in data]
        if missing:
            raise ValueError(f"{source} lacks the field(s) {', '.join(missing)}; expected arch, input_shape and classes.")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def fingerprint_of(weights: bytes) -> str:
    return hashlib.sha256(weights).hexdigest()


def weights_to_bytes(model: nn.Module) -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_safetensors(state)


def state_dict_from_bytes(weights: bytes, name: str) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes, or a `.pt`/`.pth` state dict loaded with weights_only=True."""
    if name.endswith((".pt", ".pth")):
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{name} does not hold a state dict (name -> tensor).")
        return state
    try:
        return load_safetensors(weights)
    except Exception as exc:
        raise ValueError(f"{name} is not a readable safetensors file ({exc}).") from exc


def build_teacher(card: TeacherCard, weights: bytes, name: str = "teacher weights") -> nn.Module:
    """Rebuild the teacher from its card and load its weights, strictly.

    A checkpoint that does not fit the architecture raises ValueError naming the first mismatches."""
    if card.arch not in TEACHERS:
        raise ValueError(f"teacher arch {card.arch!r} in the card is unknown; expected one of: {', '.join(TEACHERS.names())}.")
    model = TEACHERS.build(card.arch, input_shape=tuple(card.input_shape), num_classes=card.num_classes, width=card.width)
    state = state_dict_from_bytes(weights, name)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''}")
        for k in wrong_shape[:3]:
            problems.append(f"{k} has shape {list(state[k].shape)} where the model expects {list(expected[k].shape)}")
        raise ValueError(
            f"{name} does not match a {card.arch!r} teacher of width {card.width} for input {card.input_shape} "
            f"and {card.num_classes} classes: {'; '.join(problems)}."
        )
    model.load_state_dict(state)
    return model.eval()
