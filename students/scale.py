"""Standardised outputs back to physical units: the last layer of a regression student.

The student trains on targets transformed (optionally: a log for positive outputs that span
decades, a signed log for values that cross zero with heavy tails) and then standardised per output
(zero mean, unit spread, so every output weighs alike in the loss whatever its units); this layer,
built from the training shards, turns its outputs back: un-standardise, then invert the transform.
It travels with the student (its card, its ONNX file), so both take physical parameters and return
physical values.

Transforms (`TRANSFORMS`), each with one parameter taken from the training targets:
  none    y
  log     log(y + floor), for y >= 0; `floor` keeps zeros finite and squeezes values far below
          every sample's scale, which a relative error hardly sees
  asinh   asinh(y / scale), a signed log: linear within ±scale, logarithmic beyond
"""

from __future__ import annotations

import torch
import torch.nn as nn

TRANSFORMS = ("none", "log", "asinh")


def forward_transform(name: str, value: float, y: torch.Tensor) -> torch.Tensor:
    if name == "log":
        return torch.log(y.clamp_min(0) + value)
    if name == "asinh":
        return torch.asinh(y / value)
    return y


def inverse_transform(name: str, value: float, t: torch.Tensor) -> torch.Tensor:
    if name == "log":
        return torch.exp(t) - value
    if name == "asinh":
        return torch.sinh(t) * value
    return t


class OutputScale(nn.Module):
    def __init__(self, mean: list[float], std: list[float], transform: str = "none", value: float = 1.0):
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown target transform {transform!r}; expected one of: {', '.join(TRANSFORMS)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.transform, self.value = transform, float(value)

    def forward(self, standardised: torch.Tensor) -> torch.Tensor:
        return inverse_transform(self.transform, self.value, standardised * self.std + self.mean)

    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        return (forward_transform(self.transform, self.value, values) - self.mean) / self.std
