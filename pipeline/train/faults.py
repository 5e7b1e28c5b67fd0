"""Deterministic faults in training, for tests and drills of what survives a crash.

Off unless DISTILLERY_TRAIN_FAULT is set in the environment of the training process:

    DISTILLERY_TRAIN_FAULT=STEP[:RANK][:exit|raise]

Once training has passed optimizer step STEP (at the end of the training_step call that took it,
before any checkpoint of that call is written), the process of global
rank RANK (default: every rank) raises a RuntimeError (`raise`, the default) or dies on the spot
with exit code 137 as if killed (`exit`: os._exit, no cleanup, nothing flushed).
"""

from __future__ import annotations

import os
from typing import Optional

import lightning as L

TRAIN_FAULT = "DISTILLERY_TRAIN_FAULT"
KILLED_EXIT_CODE = 137  # what a shell reports for SIGKILL


class InjectedFault(L.Callback):
    def __init__(self, step: int, rank: Optional[int], mode: str):
        self.step, self.rank, self.mode = step, rank, mode
        self.start: Optional[int] = None

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.start = trainer.global_step  # a run resumed past STEP does not fail again

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self.start < self.step <= trainer.global_step or (self.rank is not None and trainer.global_rank != self.rank):
            return
        if self.mode == "exit":
            os._exit(KILLED_EXIT_CODE)
        raise RuntimeError(f"injected fault ({TRAIN_FAULT}) at step {self.step} on rank {trainer.global_rank}")


def from_environment() -> list[L.Callback]:
    spec = os.environ.get(TRAIN_FAULT)
    if not spec:
        return []
    parts = spec.split(":")
    mode = parts.pop() if parts[-1] in ("exit", "raise") else "raise"
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"{TRAIN_FAULT}={spec!r}: expected STEP[:RANK][:exit|raise]")
    return [InjectedFault(int(parts[0]), int(parts[1]) if len(parts) == 2 else None, mode)]
