"""The K worst held-out rows of a classification run, kept while the eval stage scans them: the
rows a person opens the report to look at.

Order: rows where the student's top class is not the teacher's come first, then the larger
per-row KL(teacher || student), then (shard, row) so that ties never depend on how the shards were
dealt to evaluators. Each evaluator keeps its own K worst; merging parts keeps the K worst of their
union, which is exactly the K worst of one pass over all rows (a row among the K worst overall is
among the K worst of its own part). Only the kept rows are copied out of a batch, so tracking costs
one sort of a batch's keys.

A kept row goes into report.json as plain data: shard file and row (to find it again), its KL, both
models' top classes with probabilities, and the stored input itself (base64 of its raw bytes, with
dtype and shape) when it is small enough not to bloat report.json.
"""

from __future__ import annotations

import base64

import numpy as np
import torch
import torch.nn.functional as F

GALLERY_SIZE = 16  # held-out rows kept for the report's gallery
TOP_CLASSES = 3  # classes listed per model for each kept row
MAX_INPUT_BYTES = 16 * 1024  # a stored input larger than this is referenced by shard and row only


def row_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of each row's softmax outputs, nats [B]; 0·log 0 counted as 0."""
    t_logp, s_logp = F.log_softmax(teacher.float(), 1), F.log_softmax(student.float(), 1)
    t_p = t_logp.exp()
    return torch.where(t_p > 0, t_p * (t_logp - s_logp), torch.zeros_like(t_p)).sum(1)


def _top(logits: torch.Tensor, k: int) -> list[list]:
    probs = F.softmax(logits.float(), 0)
    values, indices = probs.topk(min(k, len(probs)))
    return [[int(i), round(float(v), 6)] for v, i in zip(values, indices)]


def _stored_input(x: np.ndarray) -> dict | None:
    if x.nbytes > MAX_INPUT_BYTES:
        return None
    return {"dtype": str(x.dtype), "shape": list(x.shape), "base64": base64.b64encode(x.tobytes()).decode()}


def decode_input(stored: dict | None) -> np.ndarray | None:
    """A kept row's input as the array the shard stores (None if it was too large to keep)."""
    if not stored:
        return None
    return np.frombuffer(base64.b64decode(stored["base64"]), stored["dtype"]).reshape(stored["shape"])


def _key(row: dict) -> tuple:
    return (row["agrees"], -row["kl"], row["shard"], row["row"])


class WorstRows:
    """The `size` worst rows seen so far, worst first, as report.json entries."""

    def __init__(self, size: int = GALLERY_SIZE):
        self.size = size
        self.rows: list[dict] = []

    def update(self, student: torch.Tensor, teacher: torch.Tensor, inputs: torch.Tensor, shard: int, file: str,
               first_row: int) -> None:
        """One batch of logits [B, K] and stored inputs, rows first_row.. of shard `shard`."""
        if not self.size or not len(student):
            return
        kl = row_kl(student, teacher).numpy()
        agrees = (student.argmax(1) == teacher.argmax(1)).numpy()
        # Sort keys, last one primary: disagreements first, then larger KL, then the row's position.
        order = np.lexsort((np.arange(len(kl)), -kl, agrees))[: self.size]
        if len(self.rows) == self.size:
            bar = _key(self.rows[-1])
            order = [i for i in order if (bool(agrees[i]), -float(kl[i]), shard, first_row + int(i)) < bar]
        kept = [{"shard": shard, "file": file, "row": first_row + int(i), "kl": float(kl[i]), "agrees": bool(agrees[i]),
                 "teacher": _top(teacher[i], TOP_CLASSES), "student": _top(student[i], TOP_CLASSES),
                 "input": _stored_input(inputs[i].numpy())} for i in order]
        self.rows = sorted(self.rows + kept, key=_key)[: self.size]

    def merge(self, other: WorstRows) -> WorstRows:
        """Add a disjoint part's worst rows (Ray tasks); returns self."""
        self.rows = sorted(self.rows + other.rows, key=_key)[: self.size]
        return self
