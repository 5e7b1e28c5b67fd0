"""The input space: which inputs exist, how they are stored, and how they become floats.

A space is one object (`InputSpace`); each kind is a module that subclasses it and registers an
instance (pipeline/inputs/__init__.py lists them). Stages ask the run's space (`get_space(name)`) and
never test a kind by name. A space owns:
- configuration: which data options it needs and accepts (the command line, before anything runs);
- generation: seed -> stored inputs (a pure function; images: augment / mixup / noise around
  seeds; vectors: Sobol / LHS / grid points of a box), and the held-out draw;
- storage: the dtype and shape of one input in a shard (images: uint8 [C, H, W]);
- decoding: stored inputs -> the float tensors a model takes (images: ÷ 255), as numpy (for a
  teacher called on numpy batches) and as a torch module (the student's input adapter, run where
  the student runs, and part of its exported file where the space says so);
- showing: how the report draws one input (a thumbnail, or its values as text);
- active rounds: how new inputs are proposed around the rows a student copies worst.

Shards record their space's name (manifest `input_space`), so a reader decodes them without the config.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from pipeline.errors import UserError

# How an input was made: the shards' int8 `kind` column indexes this tuple (pipeline/shards/schema.py).
KINDS = ("augment", "mixup", "noise", "sobol", "lhs", "grid", "random-field", "perturbed-field")


class InputSpace:
    """The interface every kind of input implements (see the module docstring)."""

    name: str = ""
    stored_item_bytes: int = 4  # bytes of one stored value (the reader's in-memory estimate)
    exported_takes_stored: bool = True  # the student's ONNX file takes stored inputs (its decoding inside)
    uses_seed_images: bool = False  # generation starts from seed images (which a caller may replace)
    ranks_generated_inputs: bool = False  # active rounds may spend labels on generated inputs a student is least sure of
    default_student: str = "mlp"  # student.arch when the config leaves it unset
    stores_recipes: bool = False  # a shard may keep what remakes an input instead of it (data.store_inputs)

    def training_defaults(self, cfg, labels: int) -> dict[str, dict] | None:
        """Student sizes and training settings this space's inputs call for ({"student": {...},
        "train": {...}}, each field optional), overriding the task's own; None: the task's alone."""
        return None

    def check_config(self, cfg) -> None:
        """Refuse data options this space cannot serve (ConfigError, one sentence)."""

    def seed_images(self, cfg) -> np.ndarray | None:
        """The stored seed inputs generation starts from (part of the generator's identity), or None."""
        return None

    def probe_inputs(self, cfg, rows: int) -> np.ndarray | None:
        """A few stored inputs to probe a teacher with, for a space with no seed data; None: the
        seed data's own (images)."""
        return None

    def card_parameters(self, cfg) -> list[dict] | None:
        """What a manifest and a student card record to decode this space's inputs without the config."""
        return None

    def generation(self, cfg, seed_images, split: str, seed: int, count: int, index: int,
                   recipes: bool = False) -> tuple[Callable, tuple]:
        """(function, args) whose call makes one shard's stored inputs and their kinds; with `recipes`
        (a space that stores_recipes), also the recipes that remake them."""
        raise NotImplementedError

    def remake(self, recipes: np.ndarray, seed_images: np.ndarray) -> np.ndarray:
        """The stored inputs [n, ...] that `recipes` (as `generation` returned them) remake."""
        raise NotImplementedError

    def recipe_libraries(self) -> dict[str, str]:
        """The versions of the libraries whose code makes inputs from recipes (recorded with them)."""
        return {}

    def decode_module(self, shape, parameters: list[dict] | None) -> torch.nn.Module:
        raise NotImplementedError

    def numpy_decoder(self, shape) -> Callable[[np.ndarray], np.ndarray]:
        raise NotImplementedError

    def thumbnail(self, x: np.ndarray) -> bytes | None:
        """One stored input as a PNG for the report, or None (it is then shown as its values)."""
        return None

    def propose_around(self, cfg, worst: np.ndarray, sample_ids: np.ndarray, teacher_classes: np.ndarray,
                       count: int, round_: int, seed: int) -> Any:
        """`count` new inputs near the `worst` stored inputs (pipeline.inputs.proposals.Proposal)."""
        raise NotImplementedError


SPACES: dict[str, InputSpace] = {}


def register_space(space: InputSpace) -> InputSpace:
    if space.name in SPACES:
        raise ValueError(f"input space {space.name!r} is already registered")
    SPACES[space.name] = space
    return space


def get_space(name: str) -> InputSpace:
    """The registered input space called `name`; a UserError naming the known ones otherwise."""
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"input space {name!r} is unknown; expected one of: {', '.join(SPACES)}.") from None


def decode_module(name: str, shape, parameters: list[dict] | None = None) -> torch.nn.Module:
    """Stored rows -> model inputs, as a module (the student's first layer in training, eval and
    its exported file). Vectors need their box: `parameters` as recorded in the manifest."""
    return get_space(name).decode_module(shape, parameters)


def numpy_decoder(name: str, shape) -> Callable[[np.ndarray], np.ndarray]:
    """Stored rows -> float32 model inputs, on numpy (what every teacher kind is called with)."""
    return get_space(name).numpy_decoder(shape)
