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

One transform serves every output, or (fields with several output channels: a pressure that spans
decades beside a velocity that crosses zero) each channel has its own: `transform` and `value` are
then lists with one entry per channel, the outputs split evenly between the channels in order.
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


def sinh(t: torch.Tensor) -> torch.Tensor:
    # As exponentials: torch.onnx's TorchScript exporter has no sinh (it would fall back to the
    # slower dynamo exporter). The cancellation near 0 costs ~1e-7 of the linear range, far below
    # any sample's scale.
    return (torch.exp(t) - torch.exp(-t)) * 0.5


def inverse_transform(name: str, value: float, t: torch.Tensor) -> torch.Tensor:
    if name == "log":
        return torch.exp(t) - value
    if name == "asinh":
        return sinh(t) * value
    return t


class ChannelTransforms(nn.Module):
    """Per-channel transforms over flat outputs [B, K]: output k belongs to channel k // (K / C).
    Each branch sees only its own outputs (the others get a harmless 0), so no overflow in a branch
    that is not taken can turn a gradient into NaN."""

    def __init__(self, names: list[str], values: list[float], num_outputs: int):
        super().__init__()
        if num_outputs % len(names):
            raise ValueError(f"{num_outputs} outputs do not split evenly into {len(names)} channels")
        per = num_outputs // len(names)
        codes = torch.tensor([TRANSFORMS.index(n) for n in names]).repeat_interleave(per)
        self.register_buffer("is_log", codes == TRANSFORMS.index("log"))
        self.register_buffer("is_asinh", codes == TRANSFORMS.index("asinh"))
        self.register_buffer("param", torch.tensor(values, dtype=torch.float32).repeat_interleave(per))

    def apply(self, y: torch.Tensor) -> torch.Tensor:
        param = self.param.to(y.dtype)
        logged = torch.log(torch.where(self.is_log, y, torch.ones_like(y)).clamp_min(0) + param)
        signed = torch.asinh(torch.where(self.is_asinh, y, torch.zeros_like(y)) / param)
        return torch.where(self.is_log, logged, torch.where(self.is_asinh, signed, y))

    def inverse(self, t: torch.Tensor) -> torch.Tensor:
        param = self.param.to(t.dtype)
        unlogged = torch.exp(torch.where(self.is_log, t, torch.zeros_like(t))) - param
        unsigned = sinh(torch.where(self.is_asinh, t, torch.zeros_like(t))) * param
        return torch.where(self.is_log, unlogged, torch.where(self.is_asinh, unsigned, t))


def _check_names(names) -> None:
    for name in names:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown target transform {name!r}; expected one of: {', '.join(TRANSFORMS)}")


class OutputScale(nn.Module):
    def __init__(self, mean: list[float], std: list[float], transform: str | list[str] = "none",
                 value: float | list[float] = 1.0):
        super().__init__()
        names = [transform] if isinstance(transform, str) else list(transform)
        values = [value] * len(names) if isinstance(value, (int, float)) else [float(v) for v in value]
        _check_names(names)
        if len(values) != len(names):
            raise ValueError(f"{len(names)} target transforms but {len(values)} parameters")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        # One transform for every output keeps the plain, cheaper path (every vector surrogate).
        self.per_channel = None
        if len(set(names)) > 1 or len(set(values)) > 1:
            self.per_channel = ChannelTransforms(names, values, len(mean))
            self.transform, self.value = list(names), values
        else:
            self.transform, self.value = names[0], float(values[0])

    @property
    def transforms(self) -> list[tuple[str, float]]:
        """(name, parameter) per channel; one entry when every output shares one transform."""
        if self.per_channel is None:
            return [(self.transform, self.value)]
        return list(zip(self.transform, self.value))

    def forward_values(self, values: torch.Tensor) -> torch.Tensor:
        """Physical values -> transformed ones (before standardising)."""
        if self.per_channel is not None:
            return self.per_channel.apply(values)
        return forward_transform(self.transform, self.value, values)

    def forward(self, standardised: torch.Tensor) -> torch.Tensor:
        t = standardised * self.std + self.mean
        if self.per_channel is not None:
            return self.per_channel.inverse(t)
        return inverse_transform(self.transform, self.value, t)

    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        return (self.forward_values(values) - self.mean) / self.std
