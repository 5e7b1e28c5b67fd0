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

# Of the teacher's own margin, what the student's must reach: enough to put the classes in the
# teacher's order with a little room, small enough to leave rows already in that order to KL alone
# (at 0.5 it pulled on many of them; in one comparison on the digits rounds, training and held-out
# agreement were both a little lower than at 0.1).
MARGIN_FRACTION = 0.1


def top1_margin_hinge(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      fraction: float = MARGIN_FRACTION) -> torch.Tensor:
    """Mean over rows of relu(fraction * m_teacher - m_student), where m is the margin of the
    teacher's top class over the best other class, in each model's logits.

    Zero once the student ranks the teacher's top class first by at least `fraction` of the
    teacher's margin, so it is zero for a student that matches the teacher and changes nothing at
    that optimum. It exists for near-ties: on a row where the teacher's top two logits are 0.03
    apart, KL (or MSE) barely changes when the student puts them in the wrong order, so top-1
    agreement there is left to chance; this term is linear in the wrong order instead."""
    top = teacher_logits.argmax(1, keepdim=True)
    return torch.relu(fraction * _margin_of(teacher_logits, top) - _margin_of(student_logits, top)).mean()


def _margin_of(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Per row, the logit of `classes` [n, 1] minus the largest logit of any other class."""
    return logits.gather(1, classes).squeeze(1) - logits.scatter(1, classes, float("-inf")).amax(1)


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
