"""The field input space as an object (pipeline/inputs/space.py): arrays [C, *grid] on a 1-D or 2-D
grid, the initial conditions, coefficient maps or forcings a PDE solver takes.

- generation: Gaussian random fields per channel (pipeline/inputs/random_fields.py), or the user's
  own arrays (data.fields.base, pipeline/inputs/field_arrays.py) each plus a random perturbation;
  held-out shards come from data.heldout_seed, an independent draw;
- storage: float32 or float16 (data.fields.dtype) [C * prod(grid)], the values the solver was
  called with (after rounding to the stored type, so teacher and student see the same input);
- decoding: to float [B, C, *grid], and for the student each channel centred and scaled by its
  field's mean and amplitude (the base arrays' own spread), so it sees values of order one
  whatever the units; the exported student keeps that step and takes physical fields;
- showing: a small line plot (1-D) or image (2-D) of a channel;
- active rounds: the worst fields under a fresh perturbation of a fraction (adapt.spread, shrinking
  by round) of each channel's amplitude.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from pipeline.errors import ConfigError, UserError
from pipeline.inputs.space import KINDS, InputSpace, register_space

NAME = "fields"
RANDOM, PERTURBED = KINDS.index("random-field"), KINDS.index("perturbed-field")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def channel_dicts(fields_cfg) -> list[dict]:
    import dataclasses

    return [dataclasses.asdict(c) for c in fields_cfg.channels]


def specs_of(fields_cfg):
    from pipeline.inputs.random_fields import channel_specs

    try:
        return channel_specs(channel_dicts(fields_cfg))
    except UserError as exc:
        raise ConfigError(f"data.fields.channels: {exc}") from None


@functools.lru_cache(maxsize=4)
def _base_arrays(path: str, key: str | None, grid: tuple[int, ...]) -> np.ndarray:
    from pipeline.inputs.field_arrays import load_field_arrays

    arrays = load_field_arrays(path, key, grid)
    arrays.setflags(write=False)  # shared by every caller of the cache
    return arrays


def base_arrays(fields_cfg) -> np.ndarray | None:
    """The user's arrays [M, C, *grid] (float32), or None when inputs are random fields alone."""
    if fields_cfg.base is None:
        return None
    return _base_arrays(fields_cfg.base, fields_cfg.base_key, tuple(fields_cfg.grid))


def input_shape(fields_cfg) -> tuple[int, ...]:
    return (len(fields_cfg.channels), *fields_cfg.grid)


class FieldScale(torch.nn.Module):
    """Stored fields -> [B, C, *grid], each channel as (x − centre) / scale: the student's first
    layer, kept in its exported file so the file takes physical fields."""

    def __init__(self, shape, parameters: list[dict]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        view = (1, len(parameters)) + (1,) * (len(self.shape) - 1)
        self.register_buffer("centre", torch.tensor([p["centre"] for p in parameters], dtype=torch.float32).view(view))
        self.register_buffer("scale", torch.tensor([p["scale"] for p in parameters], dtype=torch.float32).view(view))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().reshape(-1, *self.shape) - self.centre) / self.scale


class FieldSpace(InputSpace):
    name = NAME
    stored_item_bytes = 4  # float32 at most: the reader's estimate errs on the large side for float16
    default_student = "fno"

    def check_config(self, cfg) -> None:
        f = cfg.data.fields
        _check(len(f.grid) in (1, 2) and all(int(n) >= 4 for n in f.grid),
               f"data.fields.grid must be [N] or [H, W] with at least 4 points per dimension, got {f.grid}.")
        _check(len(f.channels) >= 1, "data.fields.channels needs at least one channel: [{length_scale, amplitude, ...}].")
        specs_of(f)
        if f.base is not None:
            try:
                base = base_arrays(f)
            except UserError as exc:
                raise ConfigError(f"data.fields.base: {exc}") from None
            _check(base.shape[1] == len(f.channels),
                   f"data.fields.base {f.base} has {base.shape[1]} channels but data.fields.channels gives "
                   f"{len(f.channels)} perturbations; expected one per channel.")
        _check(cfg.teacher.kind != "auto" or cfg.teacher.checkpoint is not None,
               "data.space fields has no seed data to train a teacher on: give teacher.kind callable (a solver) "
               "or teacher.checkpoint.")
        _check(not cfg.data.parameters, "data.parameters is for data.space vectors; fields take data.fields.")

    def seed_images(self, cfg) -> np.ndarray | None:
        # The user's arrays are part of what the inputs depend on (their bytes enter the generator's hash).
        return base_arrays(cfg.data.fields)

    def probe_inputs(self, cfg, rows: int) -> np.ndarray:
        """A few inputs a teacher is probed with: the first rows of the first training shard."""
        fn, args = self.generation(cfg, self.seed_images(cfg), "train", cfg.data.seed, rows, 0)
        return fn(*args)[0]

    def card_parameters(self, cfg) -> list[dict]:
        """Per channel, the centre and scale the student's inputs are normalised with."""
        f, base = cfg.data.fields, base_arrays(cfg.data.fields)
        out = []
        for c, spec in enumerate(f.channels):
            if base is None:
                centre, spread = spec.mean, spec.amplitude
            else:  # the arrays' own spread, widened by the perturbation's
                centre = float(base[:, c].mean())
                spread = float(np.sqrt(base[:, c].var() + spec.amplitude ** 2))
            out.append({"channel": c, "centre": float(centre), "scale": float(spread) if spread > 0 else 1.0})
        return out

    def generation(self, cfg, seed_images, split: str, seed: int, count: int, index: int, recipes: bool = False):
        f = cfg.data.fields
        return generate_fields, (specs_of(f), tuple(f.grid), seed_images, seed, count, index, f.dtype)

    def decode_module(self, shape, parameters):
        if not parameters:
            raise UserError("a field input space needs each channel's centre and scale to normalise inputs.")
        return FieldScale(shape, parameters)

    def numpy_decoder(self, shape):
        return lambda stored: np.asarray(stored, dtype=np.float32).reshape(-1, *shape)

    def thumbnail(self, x: np.ndarray) -> bytes | None:
        """A 2-D field's first channel as a grey image; a 1-D one (or a flat row) as a line."""
        from pipeline.inputs.images import sparkline, thumbnail

        x = np.asarray(x, dtype=np.float32)
        return thumbnail(x[:1]) if x.ndim == 3 else sparkline(x.reshape(-1) if x.ndim == 1 else x[0])

    def propose_around(self, cfg, worst, sample_ids, teacher_classes, count, round_, seed):
        from pipeline.inputs.proposals import propose_fields

        f = cfg.data.fields
        return propose_fields(worst, sample_ids, count, cfg.adapt, specs_of(f), tuple(f.grid), f.dtype, round_, seed)

    def training_defaults(self, cfg, labels: int) -> dict:
        from pipeline.inputs.field_defaults import field_training_defaults

        return field_training_defaults(cfg, labels)


def generate_fields(specs, grid: tuple[int, ...], base: np.ndarray | None, seed: int, count: int, index: int,
                    dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A shard's fields [count, C, *grid] in the stored dtype, and their kinds."""
    from pipeline.inputs import random_fields

    if base is None:
        fields = random_fields.sample_fields(specs, grid, seed, count, index, dtype=np.dtype(dtype))
        kind = RANDOM
    else:
        fields, _ = random_fields.perturb_fields(base, specs, seed, count, index, dtype=np.dtype(dtype))
        kind = PERTURBED
    return np.ascontiguousarray(fields, dtype=np.dtype(dtype)), np.full(count, kind, np.int8)


FIELDS = register_space(FieldSpace())
