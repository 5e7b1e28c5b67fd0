"""Distillation losses on soft targets (the teacher's raw logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened distributions, times T^2.

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015)."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
        log_target=True, reduction="batchmean",
    ) * (t * t)


def mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Squared error on raw logits (temperature unused): matches the teacher's logit scale too."""
    return F.mse_loss(student_logits, teacher_logits)


LOSSES = {"kl": kl_loss, "mse": mse_loss}
