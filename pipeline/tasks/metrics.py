"""What the eval stage measures: a small registry of metric kinds, each backed by torchmetrics.

A kind says how to build its torchmetrics object for K classes, how to feed it one batch of
outputs, and how to turn its value into plain JSON. `SplitMetrics` holds one fresh metric per kind
for a split. Parts of a split evaluated apart (Ray tasks, DDP ranks) are combined with
torchmetrics' `merge_state`: every kind here keeps sum states or concatenated per-sample states,
so merging disjoint parts gives exactly the value of one pass over all of them.

The teacher is the truth: "agreement" is accuracy against the teacher's top-1 class. Kinds marked
`needs_labels` compare with true labels and run only where there are some (the real test split).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torchmetrics import KLDivergence, Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassConfusionMatrix
from torchmetrics.regression import JensenShannonDivergence
from torchmetrics.utilities import dim_zero_cat

TOP_K = 5  # "top5": the teacher's top class is among the student's top 5 (or all classes, if fewer)


@dataclass
class Outputs:
    """One batch: raw logits of both models, and true labels where the data has them."""

    student: torch.Tensor  # float [B, K]
    teacher: torch.Tensor  # float [B, K]
    labels: torch.Tensor | None = None  # int64 [B]

    @cached_property
    def teacher_top1(self) -> torch.Tensor:
        return self.teacher.argmax(1)

    @cached_property
    def student_logp(self) -> torch.Tensor:
        return F.log_softmax(self.student.float(), 1)

    @cached_property
    def teacher_logp(self) -> torch.Tensor:
        return F.log_softmax(self.teacher.float(), 1)


@dataclass(frozen=True)
class MetricKind:
    name: str
    description: str
    build: Callable[[int, int], Metric]  # (num_classes, calibration bins) -> a fresh metric
    update: Callable[[Metric, Outputs], None]
    value: Callable[[Metric], Any]  # the computed value as plain JSON data
    needs_labels: bool = False


METRICS: dict[str, MetricKind] = {}


def register_metric(kind: MetricKind) -> MetricKind:
    if kind.name in METRICS:
        raise ValueError(f"metric kind {kind.name!r} is already registered")
    METRICS[kind.name] = kind
    return kind


def _float(metric: Metric) -> float:
    return float(metric.compute())


def _accuracy(top_k: int) -> Callable[[int, int], Metric]:
    return lambda k, bins: MulticlassAccuracy(k, top_k=min(top_k, k), average="micro")


def _calibration(k: int, bins: int) -> Metric:
    return MulticlassCalibrationError(k, n_bins=bins, norm="l1")


def reliability_bins(metric: MulticlassCalibrationError) -> dict:
    """Per-bin sample count, mean confidence and accuracy: the points of a reliability diagram.

    Binned as torchmetrics bins for its ECE (equal-width bins over [0, 1]); a confidence of exactly
    1.0 is counted in the last bin."""
    n = metric.n_bins
    # The accumulated states are read through torchmetrics' public metric_state; the attributes
    # that hold them are its internals.
    state = metric.metric_state
    confidences, accuracies = state["confidences"], state["accuracies"]
    if len(confidences) == 0:
        return {"count": [0] * n, "confidence": [None] * n, "accuracy": [None] * n}
    conf, acc = dim_zero_cat(confidences).double(), dim_zero_cat(accuracies).double()
    boundaries = torch.linspace(0, 1, n + 1, dtype=conf.dtype)
    idx = (torch.bucketize(conf, boundaries, right=True) - 1).clamp(0, n - 1)
    count = torch.bincount(idx, minlength=n)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n)
    acc_sum = torch.bincount(idx, weights=acc, minlength=n)
    mean = lambda s: [float(s[i] / count[i]) if count[i] else None for i in range(n)]  # noqa: E731
    return {"count": count.tolist(), "confidence": mean(conf_sum), "accuracy": mean(acc_sum)}


def _calibration_value(metric: MulticlassCalibrationError) -> dict:
    return {"ece": float(metric.compute()), "bins": reliability_bins(metric)}


# Probabilities, not logits, go to the calibration metric: torchmetrics applies softmax only when
# a batch has values outside [0, 1], so a batch of small raw logits would be taken as probabilities.
register_metric(MetricKind(
    "top1", "share of inputs where the student's top class is the teacher's",
    _accuracy(1), lambda m, o: m.update(o.student, o.teacher_top1), _float))
register_metric(MetricKind(
    "top5", f"share where the teacher's top class is among the student's top {TOP_K}",
    _accuracy(TOP_K), lambda m, o: m.update(o.student, o.teacher_top1), _float))
register_metric(MetricKind(
    "kl", "mean KL(teacher || student) of the softmax outputs at temperature 1, nats",
    lambda k, bins: KLDivergence(log_prob=True, reduction="mean"),
    lambda m, o: m.update(o.teacher_logp, o.student_logp), _float))
register_metric(MetricKind(
    "js", "mean Jensen-Shannon divergence of the softmax outputs, nats (at most ln 2)",
    lambda k, bins: JensenShannonDivergence(log_prob=True, reduction="mean"),
    lambda m, o: m.update(o.teacher_logp, o.student_logp), _float))
register_metric(MetricKind(
    "confusion", "counts: rows the teacher's top class, columns the student's",
    lambda k, bins: MulticlassConfusionMatrix(k),
    lambda m, o: m.update(o.student.argmax(1), o.teacher_top1), lambda m: m.compute().long().tolist()))
register_metric(MetricKind(
    "ece", "expected calibration error of the student's confidence as a predictor of agreeing with the teacher",
    _calibration, lambda m, o: m.update(o.student_logp.exp(), o.teacher_top1), _calibration_value))
register_metric(MetricKind(
    "teacher_ece", "expected calibration error of the teacher against the true labels",
    _calibration, lambda m, o: m.update(o.teacher_logp.exp(), o.labels), _calibration_value, needs_labels=True))
register_metric(MetricKind(
    "student_ece", "expected calibration error of the student against the true labels",
    _calibration, lambda m, o: m.update(o.student_logp.exp(), o.labels), _calibration_value, needs_labels=True))
register_metric(MetricKind(
    "teacher_accuracy", "share of inputs where the teacher's top class is the true label",
    _accuracy(1), lambda m, o: m.update(o.teacher, o.labels), _float, needs_labels=True))
register_metric(MetricKind(
    "student_accuracy", "share of inputs where the student's top class is the true label",
    _accuracy(1), lambda m, o: m.update(o.student, o.labels), _float, needs_labels=True))


def kinds_for(labeled: bool) -> list[str]:
    return [name for name, kind in METRICS.items() if labeled or not kind.needs_labels]


class SplitMetrics:
    """One metric per kind for a split (or a part of one), and the exact count of samples seen."""

    def __init__(self, num_classes: int, bins: int = 15, labeled: bool = False):
        self.num_classes, self.labeled = num_classes, labeled
        self.metrics = {name: METRICS[name].build(num_classes, bins) for name in kinds_for(labeled)}
        self.samples = 0

    def update(self, outputs: Outputs | torch.Tensor, teacher: torch.Tensor | None = None) -> None:
        """One batch: an Outputs, or the student's and the teacher's logits (as every task's metrics take them)."""
        if not isinstance(outputs, Outputs):
            outputs = Outputs(outputs, teacher)
        if self.labeled and outputs.labels is None:
            raise ValueError("labeled metrics need outputs.labels")
        for name, metric in self.metrics.items():
            METRICS[name].update(metric, outputs)
        self.samples += len(outputs.student)

    def merge(self, other: "SplitMetrics") -> "SplitMetrics":
        """Add a disjoint part's states to these (Ray tasks, DDP ranks); returns self."""
        if other.metrics.keys() != self.metrics.keys() or other.num_classes != self.num_classes:
            raise ValueError("cannot merge metrics of different kinds or class counts")
        if other.samples and not self.samples:
            # A fresh metric that only merged states counts as never updated (and warns on compute).
            self.metrics = {name: metric.clone() for name, metric in other.metrics.items()}
        elif other.samples:
            for name, metric in self.metrics.items():
                metric.merge_state(other.metrics[name])
        self.samples += other.samples
        return self

    def compute(self) -> dict:
        """{kind: value} (None for every kind when no sample was seen), plus "samples"."""
        values = {name: (METRICS[name].value(m) if self.samples else None) for name, m in self.metrics.items()}
        return {**values, "samples": self.samples}


def per_class_agreement(confusion: list[list[int]] | None) -> list[float | None]:
    """For each teacher class, the share of its inputs where the student picks it too (None: no inputs)."""
    if confusion is None:
        return []
    return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(confusion)]


def top_confusions(confusion: list[list[int]] | None, classes: list[str], limit: int = 5) -> list[dict]:
    """The most frequent (teacher class, student class) disagreements, largest first."""
    if confusion is None:
        return []
    pairs = [(n, t, s) for t, row in enumerate(confusion) for s, n in enumerate(row) if s != t and n]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"teacher": classes[t], "student": classes[s], "count": n} for n, t, s in pairs[:limit]]
