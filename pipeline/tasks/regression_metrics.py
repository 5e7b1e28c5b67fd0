"""Regression metrics (a simulator's outputs): standardisation for training, and the error figures.

Per sample, the relative L2 error ‖student − teacher‖ / ‖teacher‖ is what a user of a surrogate
feels: reported as median, p95, p99 and max over a split, with the largest absolute error, R² per
output and the fraction of samples within a tolerance. Parts of a split evaluated apart merge
exactly: per-sample errors are concatenated and the R² sums added.

Targets that are fields ([C', *grid], stored flat) add, per output channel, the VRMSE (root mean
squared error over the field divided by the field's own spread about its mean, per sample: 1.0 is
no better than predicting the field's mean; The Well's figure), and the RMSE at each grid position
over the split (where on the grid the student errs).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from students.losses import relative_error

QUANTILES = {"median": 50, "p95": 95, "p99": 99, "max": 100}
VRMSE_EPS = 1e-12


def target_stats(batches: Iterable[dict], transform=lambda y: y) -> tuple[list[float], list[float]]:
    """Per-output mean and standard deviation of `transform(targets)` over every training row (one
    pass over `batches` of the "targets" column, float64 sums). A constant output gets std 1, so
    standardising leaves it at 0 rather than dividing by zero."""
    count, total, squares = 0, None, None
    for batch in batches:
        y = transform(batch["targets"].double())
        count += len(y)
        total = y.sum(0) if total is None else total + y.sum(0)
        squares = (y * y).sum(0) if squares is None else squares + (y * y).sum(0)
    if not count:
        raise ValueError("the training split holds no rows to standardise the targets on.")
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


class RegressionMetrics:
    """Error figures over a split (or a disjoint part of one), mergeable and exact."""

    def __init__(self, num_outputs: int, tolerance: float = 0.01, target_shape=None):
        self.num_outputs, self.tolerance = num_outputs, tolerance
        self.errors: list[np.ndarray] = []  # per-sample relative L2 errors
        self.max_abs = 0.0
        self.sums = np.zeros((4, num_outputs))  # Σy, Σy², Σ(y − ŷ)², and the count (per output)
        self.samples = 0
        # Fields: [C', *grid] of one target; per-sample VRMSE per channel [n, C'] (VRMSE_EPS keeps a
        # constant field finite).
        self.field_shape = list(target_shape) if target_shape and len(target_shape) >= 2 else None
        self.vrmse: list[np.ndarray] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.double(), target.double()
        self.errors.append(relative_error(pred, target).numpy())  # in float64, as cast above
        if len(target):
            self.max_abs = max(self.max_abs, float((pred - target).abs().max()))
        y, residual = target.numpy(), (target - pred).numpy()
        self.sums += np.stack([y.sum(0), (y * y).sum(0), (residual * residual).sum(0), np.full(y.shape[1], len(y))])
        self.samples += len(target)
        if self.field_shape:
            channels = self.field_shape[0]
            yc, rc = y.reshape(len(y), channels, -1), residual.reshape(len(y), channels, -1)
            self.vrmse.append(np.sqrt((rc ** 2).mean(2) / (yc.var(2) + VRMSE_EPS)))

    def merge(self, other: "RegressionMetrics") -> "RegressionMetrics":
        self.errors += other.errors
        self.max_abs = max(self.max_abs, other.max_abs)
        self.sums += other.sums
        self.samples += other.samples
        self.vrmse += other.vrmse
        return self

    def compute(self) -> dict:
        if not self.samples:
            return {"samples": 0, "rel_l2": None, "max_abs": None, "r2": None, "r2_mean": None, "within_tolerance": None}
        errors = np.concatenate(self.errors)
        s_y, s_yy, s_res, n = self.sums
        total = s_yy - s_y * s_y / n
        r2 = np.where(total > 0, 1 - s_res / np.where(total > 0, total, 1), np.nan)
        return {
            "samples": self.samples,
            "rel_l2": {name: float(np.percentile(errors, q)) for name, q in QUANTILES.items()} | {"mean": float(errors.mean())},
            "max_abs": self.max_abs,
            "r2": [None if np.isnan(v) else float(v) for v in r2],
            "r2_mean": float(np.nanmean(r2)) if np.isfinite(r2).any() else None,
            "within_tolerance": float((errors <= self.tolerance).mean()),
            "tolerance": self.tolerance,
        } | (self.field_figures() if self.field_shape else {})

    def field_figures(self) -> dict:
        """VRMSE per output channel (median and mean over samples) and the RMSE at each grid position
        per channel (nested lists shaped like the grid)."""
        vrmse = np.concatenate(self.vrmse)
        s_res, n = self.sums[2], self.sums[3]
        by_position = np.sqrt(s_res / np.maximum(n, 1)).reshape(self.field_shape)
        return {"field_shape": self.field_shape,
                "vrmse": [{"channel": c, "median": float(np.median(vrmse[:, c])), "mean": float(vrmse[:, c].mean()),
                           "p95": float(np.percentile(vrmse[:, c], 95))} for c in range(vrmse.shape[1])],
                "rmse_by_position": np.round(by_position, 8).tolist()}

    def worst(self, limit: int = 4) -> np.ndarray:
        """Row positions (in update order) of the largest errors, largest first."""
        errors = np.concatenate(self.errors) if self.errors else np.zeros(0)
        return np.argsort(-errors, kind="stable")[:limit]
