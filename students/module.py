"""The distillation LightningModule: a student learns the teacher's soft outputs.

Batches are dicts from the shard reader: "input" as stored (for images uint8 [B, C*H*W]) and the
teacher's targets (a classifier's "logits", a simulator's "targets", ...). `decode`, a module the
input space provides, turns stored inputs into the student's float inputs where the student runs
(after the transfer, so only the stored bytes cross to the GPU); `objective`, a module the task
provides, turns the student's outputs and the batch into (loss, rows agreeing). This module
assumes nothing about either.

Deliberate overfitting: the optimizer has no weight decay and the student no dropout. The logged
`train/agreement` (the objective's share of agreeing rows over the epoch, synced across ranks) and
`train/loss` are what the stopping rule watches.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn


SCHEDULES = ("onecycle", "cosine", "constant")
PROGRESS_EVERY_CALLS = 4  # training_step calls between the loss values the progress bar shows


class DistillationModule(L.LightningModule):
    def __init__(self, student: nn.Module, decode: nn.Module, objective: nn.Module, lr: float = 5e-3,
                 schedule: str = "onecycle", steps_per_epoch: int | None = None):
        """`objective(student_outputs, batch)` gives (loss, rows of the batch agreeing with the teacher):
        the task's (pipeline.tasks), e.g. KL to a classifier's logits, or MSE on a simulator's
        standardised outputs. `steps_per_epoch` sizes the schedule; None asks the trainer (which
        means reading the data once more before training starts)."""
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of: {', '.join(SCHEDULES)}")
        self.student = student
        self.decode = decode
        self.objective = objective
        self.lr, self.schedule = lr, schedule
        self.steps_per_epoch = steps_per_epoch
        self.save_hyperparameters(ignore=["student", "decode", "objective"])
        self.automatic_optimization = False  # training_step takes its own steps, see there
        # Epoch sums kept as plain tensors: [rows agreeing, loss * rows, rows]. One in-place add a
        # step; reduced over ranks and logged once an epoch. (Logging metric objects every step
        # costs more than a small student's whole step.)
        self.train_sums = torch.zeros(3, dtype=torch.float64)
        self.val_sums = torch.zeros(3, dtype=torch.float64)
        self._restored_train_sums: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.student(self.decode(inputs))

    def loss_and_agreement(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss, and the number of rows of the batch whose student output agrees with the teacher's."""
        return self.objective(self(batch["input"]), batch)

    @staticmethod
    def _accumulate(sums: torch.Tensor, loss: torch.Tensor, agree: torch.Tensor, rows: int) -> torch.Tensor:
        sums = sums.to(loss.device)
        sums[:2] += torch.stack([agree.double(), loss.detach().double() * rows])
        sums[2] += rows
        return sums

    def training_step(self, batches: list[dict] | dict, batch_idx: int) -> torch.Tensor:
        """One optimizer step per batch of `batches`: the loader may hand over several consecutive
        batches at once (pipeline/train/data.py), so that Lightning's per-call overhead, larger
        than a small student's whole step on a CPU, is paid once for all of them. The steps are
        exactly those of one call per batch."""
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        for batch in batches if isinstance(batches, list) else [batches]:
            loss, agree = self.loss_and_agreement(batch)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            self.train_sums = self._accumulate(self.train_sums, loss, agree, len(batch["input"]))
        if batch_idx % PROGRESS_EVERY_CALLS == 0:  # what the progress bar shows; not worth a log call a step
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=len(batch["input"]))
        return loss.detach()

    def _epoch_figures(self, sums: torch.Tensor, prefix: str, prog_bar: bool) -> None:
        """Log the epoch's agreement and mean loss, summed over ranks (every rank gets the same)."""
        total = self._reduce(sums)
        if total[2] > 0:
            self.log(f"{prefix}/agreement", float(total[0] / total[2]), prog_bar=prog_bar, rank_zero_only=False)
            self.log(f"{prefix}/loss", float(total[1] / total[2]), rank_zero_only=False)

    def _reduce(self, sums: torch.Tensor) -> torch.Tensor:
        if not _distributed():
            return sums.detach().cpu()
        # gloo and nccl both reduce float64; a copy so the running sums stay this rank's own.
        total = sums.detach().clone()
        torch.distributed.all_reduce(total)
        return total.cpu()

    def on_train_start(self) -> None:
        restored, self._restored_train_sums = self._restored_train_sums, None
        # A resumed epoch: rank 0 carries the sums of the steps before the checkpoint (over all
        # ranks); the other ranks start from zero, so the next reduction adds each row once.
        # (Lightning calls no on_train_epoch_start for an epoch it resumes.)
        if restored is not None and self.global_rank == 0:
            self.train_sums = restored.to(self.device, torch.float64).clone()

    def on_train_epoch_end(self) -> None:
        self._epoch_figures(self.train_sums, "train", prog_bar=True)
        self.train_sums = torch.zeros_like(self.train_sums)  # the next epoch's
        # Progress as metrics: they reach the caller's process even when DDP ranks were spawned.
        self.log("progress/epochs", float(self.current_epoch + 1), rank_zero_only=True)
        self.log("progress/steps", float(self.global_step), rank_zero_only=True)

    def on_validation_epoch_start(self) -> None:
        self.val_sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, agree = self.loss_and_agreement(batch)
        self.val_sums = self._accumulate(self.val_sums, loss, agree, len(batch["input"]))

    def on_validation_epoch_end(self) -> None:
        self._epoch_figures(self.val_sums, "val", prog_bar=True)

    # A checkpoint taken mid-epoch carries the epoch's running sums over all ranks, so a resumed
    # epoch ends with the figures (and the stopping decision) of an unbroken one.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every rank gets here (saving is collective), so the reduction over ranks is safe.
        checkpoint["epoch_sums"] = self._reduce(self.train_sums)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        sums = checkpoint.get("epoch_sums")
        self._restored_train_sums = sums if isinstance(sums, torch.Tensor) else None

    def configure_optimizers(self):
        optimizer = make_optimizer(self.student.parameters(), self.lr)
        if self.schedule == "constant":
            return optimizer
        if self.steps_per_epoch is not None:
            total = self.steps_per_epoch * self.trainer.max_epochs
        else:
            total = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": make_schedule(optimizer, self.schedule, self.lr, total),
                                                         "interval": "step"}}


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int):
    """The learning rate over `total_steps` optimizer steps (None for a constant rate)."""
    if schedule == "constant":
        return None
    if schedule == "onecycle":
        # A warm start, then annealing to a tiny rate, which is what lets the student settle
        # into the teacher's function rather than hover around it.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.15)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def make_optimizer(params, lr: float) -> torch.optim.Adam:
    """Adam without weight decay, fused (one kernel for all parameters) where torch supports it:
    for a small student the per-parameter loop of the default implementation costs more than the
    arithmetic."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=0.0, fused=True)
    except RuntimeError:  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=0.0)
