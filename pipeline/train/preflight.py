"""Preflight: before a long run, check that the student can memorise a handful of examples.

The run's own student (same architecture, same seeded initial weights, a copy of them), loss and
input pipeline train on the first PREFLIGHT_ROWS rows of the run's first batch. A correct setup
drives the loss to a small fraction of where it started within a few hundred steps; one that
cannot has a bug in the model (frozen or disconnected weights), the loss (detached from the
student, wrong targets) or the input pipeline (inputs that do not vary), and would waste the run.

One failure is not a bug: a learning rate too high for the student, whose outputs then stop
depending on its inputs (dead units) and settle on the best constant output, or diverge. The loss
of that constant is computed first (a fit of one output vector, which costs no forward pass), a
student stuck there for STALL_STEPS steps is stopped early, and the preflight tries a tenth of the
learning rate: if that memorises, the error says which learning rate to use.
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
STALL_STEPS = 50  # steps at the best constant output's loss, without improving, that end a try early
LOWER_LR = 0.1  # the factor on the learning rate for the second try


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


def constant_output_loss(module: DistillationModule, rows: dict[str, torch.Tensor], outputs: torch.Tensor) -> float:
    """The loss of the best output that ignores the input: one vector for every row, fitted to the
    rows' targets from the mean of `outputs` (the student's own outputs at its initial weights)."""
    constant = outputs.detach().mean(0).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([constant], lr=0.05)
    for _ in range(300):
        loss = module.objective(constant.expand_as(outputs), rows)[0]
        if not loss.requires_grad:  # a loss detached from its outputs: _memorise says so
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(module.objective(constant.expand_as(outputs), rows)[0])


def _memorise(module: DistillationModule, rows: dict[str, torch.Tensor], lr: float, max_steps: int,
              constant_loss: float) -> tuple[int, float, float, bool]:
    """Train a copy of `module` on `rows`: (steps, first loss, last loss, passed). Stops early when
    the loss has sat at the constant output's for STALL_STEPS steps without improving."""
    probe = copy.deepcopy(module).train()  # the run's own module stays untouched
    params = [p for p in probe.student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    first = last = best = math.nan
    best_step = 0
    for step in range(max_steps + 1):
        loss = probe.loss_and_agreement(rows)[0]
        last = float(loss.detach())
        if not math.isfinite(last):
            raise _fail(f"the loss is {last} at step {step}")
        if step == 0:
            first = best = last
        if last <= TARGET_FRACTION * first:
            return step, first, last, True
        if last < 0.99 * best:
            best, best_step = last, step
        stalled = step - best_step >= STALL_STEPS and best >= 0.95 * constant_loss
        if step == max_steps or stalled:
            break
        if not loss.requires_grad:
            raise _fail("the loss does not depend on the student's weights (it is detached from the model)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0 and all(p.grad is None or not p.grad.any() for p in params):
            raise _fail("no gradient reaches the student's weights")
        optimizer.step()
    return step, first, last, False


def run_preflight(module: DistillationModule, batch: dict[str, torch.Tensor], lr: float, max_steps: int,
                  device: str | torch.device = "cpu") -> PreflightResult:
    """Train a copy of `module` on the first rows of `batch`; raise PreflightError unless the loss
    falls to TARGET_FRACTION of its first value within `max_steps` optimizer steps."""
    start = time.perf_counter()
    module = copy.deepcopy(module).to(device)
    rows = {k: v[:PREFLIGHT_ROWS].to(device) for k, v in batch.items()}
    if not any(p.requires_grad for p in module.student.parameters()):
        raise _fail("the student has no trainable parameters")
    with torch.no_grad():
        initial_outputs = module(rows["input"])
    constant_loss = constant_output_loss(module, rows, initial_outputs)
    steps, first, last, passed = _memorise(module, rows, lr, max_steps, constant_loss)
    if passed:
        return PreflightResult(steps, first, last, time.perf_counter() - start)
    stuck = last >= 0.95 * constant_loss  # at the constant output's loss, or above it (diverged)
    if stuck:
        lower = lr * LOWER_LR
        lower_steps, _, _, lower_passed = _memorise(module, rows, lower, max_steps, constant_loss)
        if lower_passed:
            raise PreflightError(
                f"Preflight failed: at train.lr {lr:g} the student does not learn (after {steps} steps its loss is {last:.4g}; "
                f"the best output that ignores the input scores {constant_loss:.4g}), while at {lower:g} it "
                f"memorises {PREFLIGHT_ROWS} examples in {lower_steps} steps; set --train.lr {lower:g} (in a new --out: "
                f"a run directory keeps the config it was started with).")
    constant = f", no better than the best output that ignores the input ({constant_loss:.4g})" if stuck else ""
    raise _fail(f"after {steps} steps the loss went from {first:.4g} to {last:.4g}, "
                f"not below {TARGET_FRACTION:.0%} of where it started{constant}")
