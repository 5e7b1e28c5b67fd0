"""The task: what a target is, how it is stored, and which loss and metrics measure closeness.

classification  targets are a classifier's raw logits, stored float16 (column `logits`, optionally
                only the top k); trained with KL at a temperature; scored by top-1 / top-5 agreement,
                KL and JS (pipeline.tasks.metrics); the gate reads held-out top-1 agreement.
regression      targets are float32 vectors in physical units (column `targets`), standardised per
                output for training; scored by relative L2 error (pipeline.tasks.regression); the
                gate reads a held-out relative-error quantile.

Everything that depends on the kind of target asks here, so no stage assumes logits.
"""

from __future__ import annotations

import numpy as np

CLASSIFICATION, REGRESSION = "classification", "regression"
TARGET_COLUMN = {CLASSIFICATION: "logits", REGRESSION: "targets"}
TARGET_DTYPE = {CLASSIFICATION: np.float16, REGRESSION: np.float32}


def target_column(task: str) -> str:
    return TARGET_COLUMN[task]


def stored_targets(task: str, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's float32 outputs [n, K] as stored, and which rows are finite. Non-finite rows
    would poison training: they are dropped and counted, never written. (float16 overflows past
    65504, so the check comes after the cast.)"""
    stored = np.asarray(outputs).astype(TARGET_DTYPE[task])
    finite = np.isfinite(stored).all(axis=1) if stored.ndim == 2 else np.zeros(len(stored), bool)
    return stored, finite
