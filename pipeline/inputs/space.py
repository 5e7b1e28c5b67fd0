"""The input space interface: which inputs exist, how they are stored, and how they become floats.

A space owns three things, so that no stage assumes them:
- generation: seed -> stored inputs (a pure function; images: augment / mixup / noise around seeds),
- storage: the dtype and shape of one input in a shard (images: uint8 [C, H, W]),
- decoding: stored inputs -> the float tensors a model takes (images: ÷ 255), as numpy (for a
  teacher called on numpy batches) and as a torch module (run where the student runs).

Shards record their space's name (manifest `input_space`), so a reader decodes them without the config.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.inputs import images, vectors

SPACES = (images.NAME, vectors.NAME)


def _check(name: str) -> None:
    if name not in SPACES:
        raise UserError(f"input space {name!r} is unknown; expected one of: {', '.join(SPACES)}.")


def decode_module(name: str, shape, parameters: list[dict] | None = None) -> torch.nn.Module:
    """Stored rows -> model inputs, as a module (the student's first layer in training, eval and
    its exported file). Vectors need their box: `parameters` as recorded in the manifest."""
    _check(name)
    if name == vectors.NAME:
        if not parameters:
            raise UserError("a vector input space needs its parameters (name, low, high, log) to scale inputs.")
        return vectors.BoxScale(vectors.box_of_dicts(parameters))
    return images.ImageDecode(shape)


def numpy_decoder(name: str, shape) -> Callable[[np.ndarray], np.ndarray]:
    """Stored rows -> float32 model inputs, on numpy (what every teacher kind is called with)."""
    _check(name)
    if name == vectors.NAME:
        return vectors.decode_numpy
    return lambda stored: images.decode_numpy(stored, shape)
