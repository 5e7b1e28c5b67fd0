"""Standardised outputs back to physical units: the last layer of a regression student.

The student trains on targets standardised per output (zero mean, unit spread, so every output
weighs alike in the loss whatever its units); this layer, built from the training shards' mean and
standard deviation, turns its outputs back. It travels with the student (its card, its ONNX file).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class OutputScale(nn.Module):
    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, standardised: torch.Tensor) -> torch.Tensor:
        return standardised * self.std + self.mean

    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std
