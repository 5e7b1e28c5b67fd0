"""The distillation LightningModule: a student learns the teacher's soft outputs.

Batches are dicts from the shard reader: "input" as stored (for images uint8 [B, C*H*W]) and
"logits" float16 [B, K] (the teacher's raw logits). `decode`, a module the input space provides,
turns stored inputs into the student's float inputs where the student runs (after the transfer,
so only the stored bytes cross to the GPU); this module assumes nothing about them.

Deliberate overfitting: the optimizer has no weight decay and the student no dropout. The logged
`train/agreement` (top-1, over the epoch, synced across ranks) is what the stopping rule watches.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from students.losses import LOSSES, REGRESSION_LOSSES, relative_error
from students.scale import OutputScale

SCHEDULES = ("onecycle", "cosine", "constant")


class DistillationModule(L.LightningModule):
    def __init__(self, student: nn.Module, decode: nn.Module, num_classes: int, lr: float = 5e-3,
                 temperature: float = 1.0, loss: str = "kl", schedule: str = "onecycle",
                 steps_per_epoch: int | None = None, target_scale: OutputScale | None = None,
                 tolerance: float = 0.01):
        """`steps_per_epoch` sizes the schedule; None asks the trainer (which means reading the data
        once more before training starts).

        With `target_scale` the targets are regression values (batch "targets", float32, physical
        units): the student predicts them standardised by it, `loss` is mse (on standardised values)
        or relative, and a row agrees when its relative L2 error is at most `tolerance`. Without,
        they are a classifier's logits (batch "logits") and a row agrees when the top classes match."""
        super().__init__()
        self.regression = target_scale is not None
        losses = REGRESSION_LOSSES if self.regression else LOSSES
        if loss not in losses:
            raise ValueError(f"unknown loss {loss!r}; expected one of: {', '.join(losses)}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of: {', '.join(SCHEDULES)}")
        self.student = student
        self.decode = decode
        self.lr, self.temperature, self.schedule = lr, temperature, schedule
        self.steps_per_epoch = steps_per_epoch
        self.loss_fn = losses[loss]
        self.target_scale, self.tolerance = target_scale, tolerance
        self.save_hyperparameters(ignore=["student", "decode", "target_scale"])
        if self.regression:  # the share of rows within tolerance
            self.train_agreement, self.val_agreement = MeanMetric(), MeanMetric()
        else:  # validate_args=False: the per-step input checks cost more than the update itself.
            self.train_agreement = MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False)
            self.val_agreement = MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False)
        self.train_loss = MeanMetric()  # epoch mean, synced across ranks once per epoch, not per step
        self._restored_epoch_metrics: dict | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.student(self.decode(inputs))

    def _shared_step(self, batch: dict) -> tuple[torch.Tensor, tuple]:
        """The loss, and what the agreement metric is updated with."""
        student = self(batch["input"])
        if self.regression:
            target = batch["targets"].float()
            loss = self.loss_fn(student, target, self.target_scale)
            with torch.no_grad():
                agree = (relative_error(self.target_scale(student.detach()), target) <= self.tolerance).float()
            return loss, (agree,)
        teacher = batch["logits"].float()
        return self.loss_fn(student, teacher, self.temperature), (student, teacher.argmax(1))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, agreement_args = self._shared_step(batch)
        self.train_agreement.update(*agreement_args)
        self.train_loss.update(loss.detach(), weight=len(batch["input"]))
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/agreement", self.train_agreement, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # Progress as metrics: they reach the caller's process even when DDP ranks were spawned.
        self.log("progress/epochs", float(self.current_epoch + 1), rank_zero_only=True)
        self.log("progress/steps", float(self.global_step), rank_zero_only=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, agreement_args = self._shared_step(batch)
        self.val_agreement.update(*agreement_args)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True)
        self.log("val/agreement", self.val_agreement, on_epoch=True, prog_bar=True)

    # A checkpoint taken mid-epoch carries the epoch's running agreement and loss, summed over the
    # ranks, so a resumed epoch ends with the figures (and the stopping decision) of an unbroken one.
    def _epoch_metrics(self) -> dict[str, Metric]:
        return {"train_agreement": self.train_agreement, "train_loss": self.train_loss}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every rank gets here (saving is collective), so the sum over ranks is safe to take.
        states = {}
        for name, metric in self._epoch_metrics().items():
            with metric.sync_context(should_sync=True, distributed_available=_distributed):
                states[name] = {k: getattr(metric, k).detach().cpu().clone() for k in metric._defaults}
        checkpoint["epoch_metrics"] = states

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restored_epoch_metrics = checkpoint.get("epoch_metrics")

    def on_train_start(self) -> None:
        # Rank 0 carries the restored sums; the other ranks start from zero, so the next sync adds
        # each row once.
        states, self._restored_epoch_metrics = self._restored_epoch_metrics, None
        if not states or self.global_rank != 0:
            return
        for name, metric in self._epoch_metrics().items():
            for key, value in states.get(name, {}).items():
                setattr(metric, key, value.to(self.device))
            metric._update_count = max(metric._update_count, 1)  # it holds data: compute() without a warning

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.student.parameters(), lr=self.lr, weight_decay=0.0)
        if self.schedule == "constant":
            return optimizer
        if self.steps_per_epoch is not None:
            total = self.steps_per_epoch * self.trainer.max_epochs
        else:
            total = int(self.trainer.estimated_stepping_batches)
        if self.schedule == "onecycle":
            # A warm start, then annealing to a tiny rate, which is what lets the student settle
            # into the teacher's function rather than hover around it.
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=total,
                                                           pct_start=0.15)
        else:
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
