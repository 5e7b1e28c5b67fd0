"""Scoring every labeled training row with the current student: which rows it copies worst.

The scan is the eval stage's (pipeline.evaluate.stage.evaluate_split): every committed row exactly
once, shards dealt whole to Ray tasks whose parts merge. `RowScores` rides along as its row keeper
and records one score per row, with the row's place (shard index, row in shard):
- classification: whether the student's top class differs from the teacher's, and the per-row
  KL(teacher || student) (pipeline.tasks.worst.row_kl);
- regression: the relative L2 error ‖student − teacher‖ / ‖teacher‖.
Worst first means disagreements first, then the larger KL (regression: the larger error); ties
fall to the row's place, so the order never depends on how shards were dealt to tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline import shards
from pipeline.evaluate.stage import evaluate_split
from pipeline.tasks import get_task
from pipeline.run.ray_session import cluster_cpus
from pipeline.train.student import load_student_dir


class RowScores:
    """Per-row scores of a scan (or of a disjoint part of one); parts merge by concatenation."""

    def __init__(self, task: str):
        self.task = task
        self.parts: list[np.ndarray] = []  # structured arrays, one per batch

    DTYPE = np.dtype([("shard", np.int64), ("row", np.int64), ("mismatch", np.bool_), ("score", np.float64),
                      ("teacher_class", np.int64)])

    def update(self, student: torch.Tensor, teacher: torch.Tensor, inputs: torch.Tensor, shard: int, file: str,
               first_row: int) -> None:
        part = np.zeros(len(student), self.DTYPE)
        part["shard"], part["row"] = shard, first_row + np.arange(len(student))
        for key, values in get_task(self.task).row_scores(student, teacher).items():
            part[key] = values
        self.parts.append(part)

    def merge(self, other: RowScores) -> RowScores:
        self.parts += other.parts
        return self

    @property
    def rows(self) -> np.ndarray:
        """Every scored row, worst first."""
        rows = np.concatenate(self.parts) if self.parts else np.zeros(0, self.DTYPE)
        return rows[np.lexsort((rows["row"], rows["shard"], -rows["score"], ~rows["mismatch"]))]


@dataclass
class Scored:
    """A split scored by a student: every row worst first, with its sample id and stored input."""

    rows: np.ndarray  # RowScores.DTYPE, worst first
    sample_ids: np.ndarray  # int64, aligned with rows
    inputs: np.ndarray  # stored inputs (uint8 images, float32 vectors), aligned with rows
    metrics: dict  # the scan's metric values over the split (agreement, or relative error figures)


def score_split(student_dir: str, split_dir: str, batch_size: int = 4096, workers: int | None = None) -> Scored:
    """Score every row of the split with the student in `student_dir`, in up to `workers` Ray tasks
    (None: one per CPU of the cluster; Ray must be initialized for more than one)."""
    student, card, weights = load_student_dir(student_dir)
    manifest = shards.require_manifest(split_dir)
    workers = workers or max(1, int(cluster_cpus()))
    scan = evaluate_split(student, card, weights, split_dir, batch_size, workers=workers,
                          worst=RowScores(manifest.task))
    rows = scan.worst.rows
    if len(rows) != manifest.rows:
        raise RuntimeError(f"scored {len(rows)} rows of {split_dir}, whose manifest records {manifest.rows}")
    # Each row's place in the split read in manifest order: shard's first row + row in shard.
    first = dict(zip(sorted(manifest.shards), np.cumsum([0] + [r.rows for r in manifest.records()])))
    position = np.array([first[s] for s in rows["shard"]], np.int64) + rows["row"]
    stored = shards.read_split(split_dir, manifest, ("sample_id", "input"))
    return Scored(rows, stored["sample_id"].numpy()[position],
                  stored["input"].numpy()[position].reshape(-1, *manifest.input_shape), scan.metrics.compute())
