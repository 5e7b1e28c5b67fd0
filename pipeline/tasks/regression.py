"""Regression: targets are float32 vectors in physical units (column `targets`, a simulator's
outputs), standardised per output for training (students.scale.OutputScale, fitted on the training
shards); trained with MSE on standardised values or the mean squared relative error; scored by the
per-sample relative L2 error (pipeline.tasks.regression_metrics); the gate, the registry and the
sweep read a held-out relative-error quantile (eval.rel_error_quantile).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from pipeline.errors import ConfigError
from pipeline.tasks.task import Figure, Task, register_task
from students.losses import REGRESSION_LOSSES, relative_error
from students.scale import OutputScale


class ValueObjective(nn.Module):
    """A loss on standardised outputs (students.losses.REGRESSION_LOSSES); a row agrees when its
    relative L2 error in physical units is at most `tolerance`."""

    def __init__(self, loss: str, scale: OutputScale, tolerance: float):
        super().__init__()
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of: {', '.join(REGRESSION_LOSSES)}")
        self.loss_fn, self.scale, self.tolerance = REGRESSION_LOSSES[loss], scale, tolerance

    def forward(self, student: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        target = batch["targets"].float()
        loss = self.loss_fn(student, target, self.scale)
        with torch.no_grad():
            agree = (relative_error(self.scale(student.detach()), target) <= self.tolerance).sum()
        return loss, agree


# Defaults for a surrogate: a plain MLP trained long enough to interpolate its labels. The epochs
# follow the label count, so that a small table is trained for as many optimizer steps as a large
# one (and a large one at least MIN_EPOCHS passes).
# Width 160: a surrogate is there to be fast. On two cores 4 x 256 SiLU units run ~200k samples/s at
# batch 1024, about 500x a fast solver (Burgers, ~300 samples/s); 4 x 160 runs 2.2x as fast. Fitted
# the same way (bench/surrogates.py's reference, 20k steps), width 160 had 1.5x the held-out p95 of
# width 256 on Lorenz-96 and Burgers; width 128 had 1.5x to 2x on the four simulators, and its
# Lorenz-96 p99 passed 6e-2.
STUDENT = {"width": 160, "depth": 4, "activation": "silu"}
BATCH_SIZE, LR, PATIENCE = 256, 2e-3, 30
TARGET_STEPS, MIN_EPOCHS, MAX_EPOCHS = 40_000, 150, 2_000


def pool_per_channel(mean: list[float], std: list[float], shape) -> tuple[list[float], list[float]]:
    """Per-output moments of a field target [C', *grid] pooled over its grid: each channel's mean and
    spread over all its points (every point has as many rows, so pooling the moments is exact)."""
    m = np.asarray(mean).reshape(shape[0], -1)
    second = (np.asarray(std).reshape(shape[0], -1) ** 2 + m ** 2).mean(axis=1)
    centre = m.mean(axis=1)
    spread = np.sqrt(np.maximum(second - centre ** 2, 0))
    spread = np.where(spread > 1e-12 * (1 + np.abs(centre)), spread, 1.0)
    size = m.shape[1]
    return np.repeat(centre, size).tolist(), np.repeat(spread, size).tolist()


class Regression(Task):
    name = "regression"
    column = "targets"
    dtype = np.float32
    summary = "targets are float32 vectors (a simulator's outputs), scored by relative error"
    losses = ("mse", "relative")
    default_loss = "mse"
    curve_words = "share outside the tolerance (1 − within)"
    compares_teacher_latency = False  # the sweep times the teacher beside its students
    figure_words = "within tolerance"

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        if cfg.label.top_k is not None:
            raise ConfigError("label.top_k is for classification logits, not regression.")

    def output_scale(self, cfg, target_batches: Callable[[], Iterable[dict]], target_shape=None) -> OutputScale:
        """The transform task.target_transform asks for (auto: chosen from a sample of the training
        targets, pipeline/tasks/target_transforms.py), then the per-output standardisation of the
        transformed targets over every training row; for field targets ([C', *grid]) per channel,
        pooled over the grid (a point the boundary pins has no spread of its own to divide by)."""
        from pipeline.errors import UserError
        from pipeline.tasks import target_transforms
        from pipeline.tasks.regression_metrics import target_stats

        fields = bool(target_shape and len(target_shape) >= 2)
        try:
            chosen = target_transforms.choose_per_channel(cfg.task.target_transform,
                                                          target_transforms.sample_targets(target_batches()),
                                                          int(target_shape[0]) if fields else 1)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        names, values = [c.name for c in chosen], [c.value for c in chosen]
        # A placeholder standardisation carries the transform into the one pass that measures the
        # moments (one entry per output when the channels' transforms differ, else one for all).
        size = int(np.prod(target_shape)) if fields else 1
        transform = OutputScale([0.0] * size, [1.0] * size, names, values)
        mean, std = target_stats(target_batches(), transform.forward_values)
        if fields:
            mean, std = pool_per_channel(mean, std, target_shape)
        scale = OutputScale(mean, std, names, values)  # one shared transform collapses to the plain path
        scale.reason = "; ".join(c.reason for c in chosen)  # recorded in the student's card
        scale.reasons = [c.reason for c in chosen]
        return scale

    def loss(self, cfg, scale=None) -> str:
        """auto: `relative` (the report's own figure) on untransformed targets; `mse` on transformed
        ones, where the transform already puts the samples on one relative footing."""
        if cfg.train.loss != "auto":
            return cfg.train.loss
        untransformed = scale is None or all(name == "none" for name, _ in scale.transforms)
        return "relative" if untransformed else "mse"

    def objective(self, cfg, scale) -> ValueObjective:
        return ValueObjective(self.loss(cfg, scale), scale, cfg.task.tolerance)

    def defaults(self, cfg) -> tuple[dict[str, dict], str]:
        d = cfg.data
        labels = d.shards * d.samples_per_shard
        batch = cfg.train.batch_size or BATCH_SIZE
        steps_per_epoch = max(1, labels // batch)
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_STEPS / steps_per_epoch)))
        chosen = {"student": dict(STUDENT),
                  "train": {"max_epochs": epochs, "batch_size": BATCH_SIZE, "lr": LR, "patience": PATIENCE}}
        why = (f"regression defaults for {len(d.parameters)} parameters and {labels:,} labels: "
               f"about {TARGET_STEPS:,} optimizer steps at batch {batch}")
        from pipeline.inputs import get_space

        space_says = get_space(d.space).training_defaults(cfg, labels)
        if space_says:  # inputs of another shape (fields) call for another student and its own training
            chosen, why = {k: {**chosen.get(k, {}), **space_says.get(k, {})} for k in ("student", "train")}, space_says["why"]
        return chosen, why

    def stopping(self, cfg) -> dict:
        # The training loss keeps falling by orders of magnitude long after the share within
        # tolerance is 0 or 1, so any fall at all counts as progress.
        return {"monitor": "train/loss", "mode": "min", "min_delta": 0.0}

    def new_metrics(self, num_outputs: int, bins: int, tolerance: float, target_shape=None):
        from pipeline.tasks.regression_metrics import RegressionMetrics

        return RegressionMetrics(num_outputs, tolerance, target_shape)

    def row_scores(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, np.ndarray]:
        return {"mismatch": np.zeros(len(student), bool),
                "score": relative_error(student.double(), teacher.double()).numpy(),
                "teacher_class": np.full(len(student), -1, np.int64)}

    def headline(self, quantile: str) -> Figure:
        return Figure(f"held-out relative L2 error {quantile}", higher_is_better=False)

    def headline_value(self, values: dict, quantile: str) -> float | None:
        return (values.get("rel_l2") or {}).get(quantile)

    def scalar_metrics(self, values: dict) -> dict:
        return {k: values[k] for k in ("samples", "rel_l2", "max_abs", "r2_mean", "within_tolerance")}

    def gate_bar(self, min_agreement, max_rel_error):
        return max_rel_error

    def bar_option(self) -> str:
        return "--max-rel-error"

    def gate_fields(self, min_agreement, max_rel_error, quantile) -> dict:
        return {"max_rel_error": max_rel_error, "rel_error_quantile": quantile}

    def round_figure(self, values: dict) -> dict:
        return {"samples": values["samples"], **{k: values["rel_l2"][k] for k in ("median", "p95", "p99", "max")}}

    def round_error(self, figures: dict) -> float:
        return figures["p99"]

    round_ylabel = "held-out p99 relative L2 error"
    round_column = ("p99 relative L2", "p99")

    def round_line(self, heldout: dict, train: dict) -> str:
        return (f"held-out relative L2 p99 {heldout['p99']:.3g} (median {heldout['median']:.3g}), "
                f"train p99 {train['p99']:.3g}")

    # -- the report (pipeline/tasks/regression_report.py draws it) ----------------------------
    metrics_section = "regression"  # the report field holding each split's metric values
    report_keys = ("regression", "speed", "speedup")

    def build_report(self, ctx) -> dict:
        from pipeline.tasks import regression_report

        return regression_report.build(ctx)

    def render(self):
        from pipeline.tasks import regression_report

        return regression_report


REGRESSION = register_task(Regression())
