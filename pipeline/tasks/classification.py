"""Classification: targets are a classifier's raw logits, stored float16 (column `logits`, optionally
only the top k); trained with KL at a temperature (or MSE on logits), with an optional top-1 margin
hinge; scored by top-1 / top-5 agreement, KL and JS (pipeline.tasks.metrics); the gate, the registry
and the sweep read held-out top-1 agreement.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from pipeline.errors import ConfigError
from pipeline.tasks.task import Figure, Task, register_task
from students.losses import LOSSES, top1_margin_hinge

# adapt.round_epochs when unset: a round's student only has to rank the inputs it is least sure
# of, which it can long before it has memorised every row.
ROUND_EPOCHS = 30
AGREEMENT_KINDS = ("top1", "top5", "kl", "js")
DEFAULTS = {"student": {"width": 112, "depth": 3},
            "train": {"max_epochs": 60, "batch_size": 512, "lr": 1e-2, "patience": 10}}


class LogitObjective(nn.Module):
    """KL (or MSE) to the teacher's logits, plus `margin_weight` times the top-1 margin hinge; a row
    agrees when both top classes match."""

    def __init__(self, loss: str, temperature: float, margin_weight: float):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of: {', '.join(LOSSES)}")
        self.loss_fn, self.temperature, self.margin_weight = LOSSES[loss], temperature, margin_weight

    def forward(self, student: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        teacher = batch["logits"].float()
        loss = self.loss_fn(student, teacher, self.temperature)
        if self.margin_weight:
            loss = loss + self.margin_weight * top1_margin_hinge(student, teacher)
        with torch.no_grad():
            agree = (student.detach().argmax(1) == teacher.argmax(1)).sum()
        return loss, agree


class Classification(Task):
    name = "classification"
    column = "logits"
    dtype = np.float16
    summary = "targets are a classifier's logits (float16), scored by agreement and KL"
    losses = ("kl", "mse")
    default_loss = "kl"
    curve_words = "top-1 disagreement (1 − agreement) with the teacher"
    measures_accuracy = True  # a teacher's top class can be scored against true labels
    ranks_by_margin = True  # least-sure rounds rank generated inputs by the student's top-1 margin
    compares_teacher_latency = True  # the sweep times the teacher beside its students
    figure_words = "agreement"

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        if cfg.label.top_k is not None and cfg.train.loss not in ("kl", "auto"):
            raise ConfigError(f"train.loss {cfg.train.loss} needs every logit, but label.top_k stores only the top k: "
                              "use train.loss kl.")

    def round_epochs(self, cfg) -> int:
        return ROUND_EPOCHS

    def defaults(self, cfg) -> tuple[dict[str, dict], str]:
        # Fixed: chosen on the digits demo and kept, so runs recorded with them stay the same runs.
        return DEFAULTS, ""

    def objective(self, cfg, scale) -> LogitObjective:
        return LogitObjective(self.loss(cfg), cfg.train.temperature, cfg.margin_weight)

    def stopping(self, cfg) -> dict:
        # Agreement is the figure a user cares about, and it saturates: a rise below min_delta is none.
        return {"monitor": "train/agreement", "mode": "max", "min_delta": cfg.train.min_delta}

    def new_metrics(self, num_outputs: int, bins: int, tolerance: float, target_shape=None):
        from pipeline.tasks.metrics import SplitMetrics  # torchmetrics: only where metrics are computed

        return SplitMetrics(num_outputs, bins)

    def keeps_worst_rows(self) -> bool:
        return True

    def row_scores(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, np.ndarray]:
        from pipeline.tasks.worst import row_kl

        return {"mismatch": (student.argmax(1) != teacher.argmax(1)).numpy(), "score": row_kl(student, teacher).numpy(),
                "teacher_class": teacher.argmax(1).numpy()}

    def headline(self, quantile: str) -> Figure:
        return Figure("held-out top-1 agreement", higher_is_better=True)

    def headline_value(self, values: dict, quantile: str) -> float | None:
        return values.get("top1")

    def scalar_metrics(self, values: dict) -> dict:
        return {k: v for k, v in values.items() if isinstance(v, (int, float))}

    def gate_bar(self, min_agreement, max_rel_error):
        return min_agreement

    def bar_option(self) -> str:
        return "--min-agreement"

    def gate_fields(self, min_agreement, max_rel_error, quantile) -> dict:
        return {"min_agreement": min_agreement}

    def format_value(self, value: float) -> str:
        return f"{value:.4f}"

    def round_figure(self, values: dict) -> dict:
        return {"samples": values["samples"], "top1": values["top1"], "kl": values["kl"]}

    def round_error(self, figures: dict) -> float:
        return 1 - figures["top1"]

    round_ylabel = "disagreement (1 − top-1 agreement)"
    round_column = ("top-1 agreement", "top1")

    def round_line(self, heldout: dict, train: dict) -> str:
        return f"held-out top-1 agreement {heldout['top1']:.4f}, train {train['top1']:.4f}"

    # -- the report (pipeline/tasks/classification_report.py draws it) ----------------------
    metrics_section = "agreement"  # the report field holding each split's metric values
    report_keys = ("agreement", "accuracy", "classes", "calibration", "reliability", "per_class_agreement",
                   "confusion", "latency", "gallery")

    def build_report(self, ctx) -> dict:
        from pipeline.tasks import classification_report

        return classification_report.build(ctx)

    def render(self):
        """The module that draws this task's report sections (tables, lines, figures)."""
        from pipeline.tasks import classification_report

        return classification_report


CLASSIFICATION = register_task(Classification())
