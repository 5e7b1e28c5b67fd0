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


# Regression (a simulator's outputs): the student predicts standardised values; `scale`
# (students.scale.OutputScale) maps them back to physical units.
NORM_FLOOR = 1e-12


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row ‖pred − target‖ / ‖target‖."""
    return (pred - target).norm(dim=1) / target.norm(dim=1).clamp_min(NORM_FLOOR)


def standardised_mse(standardised: torch.Tensor, target: torch.Tensor, scale) -> torch.Tensor:
    """Squared error on standardised values: every output weighs alike, whatever its units."""
    return F.mse_loss(standardised, scale.standardise(target))


def relative_mse(standardised: torch.Tensor, target: torch.Tensor, scale) -> torch.Tensor:
    """Mean over rows of ‖pred − target‖² / ‖target‖², in physical units: what the report's relative
    error measures, so small outputs count as much as large ones."""
    pred = scale(standardised)
    return ((pred - target).pow(2).sum(1) / target.pow(2).sum(1).clamp_min(NORM_FLOOR)).mean()


REGRESSION_LOSSES = {"mse": standardised_mse, "relative": relative_mse}
