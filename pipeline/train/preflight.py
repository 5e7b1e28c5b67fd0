"""Preflight: before a long run, check that the student can memorise a handful of examples.

The run's own student (same architecture, same seeded initial weights, a copy of them), loss and
input pipeline train on the first PREFLIGHT_ROWS rows of the run's first batch. A correct setup
drives the loss to a small fraction of where it started within a few hundred steps; one that
cannot has a bug in the model (frozen or disconnected weights), the loss (detached from the
student, wrong targets) or the input pipeline (inputs that do not vary), and would waste the run.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch

from pipeline.errors import UserError
from students import DistillationModule

PREFLIGHT_ROWS = 32  # few enough that any student worth training memorises them
TARGET_FRACTION = 0.05  # "near zero": the loss must fall to 5% of its first value


class PreflightError(UserError):
    """The student could not memorise one small batch."""


@dataclass
class PreflightResult:
    steps: int
    first_loss: float
    last_loss: float
    seconds: float


def _fail(message: str) -> PreflightError:
    return PreflightError(f"Preflight failed: {message}; a student that cannot memorise {PREFLIGHT_ROWS} examples "
                          "has a bug in its model, loss or input pipeline "
                          "(skip this check with --train.preflight false).")


def run_preflight(module: DistillationModule, batch: dict[str, torch.Tensor], lr: float, max_steps: int,
                  device: str | torch.device = "cpu") -> PreflightResult:
    """Train a copy of `module` on the first rows of `batch`; raise PreflightError unless the loss
    falls to TARGET_FRACTION of its first value within `max_steps` optimizer steps."""
    start = time.perf_counter()
    probe = copy.deepcopy(module).to(device).train()  # the run's own module stays untouched
    rows = {k: v[:PREFLIGHT_ROWS].to(device) for k, v in batch.items()}
    params = [p for p in probe.student.parameters() if p.requires_grad]
    if not params:
        raise _fail("the student has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=lr)
    first = last = math.nan
    for step in range(max_steps + 1):
        loss = probe.loss_and_agreement(rows)[0]
        last = float(loss.detach())
        if not math.isfinite(last):
            raise _fail(f"the loss is {last} at step {step}")
        if step == 0:
            first = last
        if last <= TARGET_FRACTION * first:
            return PreflightResult(step, first, last, time.perf_counter() - start)
        if step == max_steps:
            break
        if not loss.requires_grad:
            raise _fail("the loss does not depend on the student's weights (it is detached from the model)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0 and all(p.grad is None or not p.grad.any() for p in params):
            raise _fail("no gradient reaches the student's weights")
        optimizer.step()
    raise _fail(f"after {max_steps} steps the loss went from {first:.4g} to {last:.4g}, "
                f"not below {TARGET_FRACTION:.0%} of where it started")
