"""The Lightning side of training: the run's module (student + decoding + loss) and its Trainer.

Shared by the train stage in this process (and its spawned DDP ranks) and by Ray Train workers
(pipeline/train/on_ray.py), so every process builds exactly the same thing.
"""

from __future__ import annotations

import os
from datetime import timedelta

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy

from pipeline.config import Config
from pipeline.inputs import space
from pipeline.shards import Manifest
from pipeline.run import output
from pipeline.train import checkpoints
from pipeline.train.progress import ProgressLines
from pipeline.train import faults as train_faults
from pipeline.train.student import build_student, student_kwargs
from pipeline.tasks.regression import target_stats
from students import DistillationModule
from students.scale import OutputScale

PROGRESS_REFRESH_CALLS = 4  # training_step calls (of data.STEPS_PER_CALL steps each) between bar redraws
# A rank that stops answering fails the job after this long instead of holding the others forever
# (a rank that dies is noticed at once: its peers' collectives fail).
DDP_TIMEOUT = timedelta(minutes=10)


def build_module(cfg: Config, manifest: Manifest, steps_per_epoch: int,
                 target_scale: OutputScale | None = None) -> DistillationModule:
    """The run's module with its seeded initial weights (the same in every process that builds it).
    A regression run passes `target_scale` (regression_scale) from its training shards."""
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    t = cfg.train
    student = build_student(cfg.student.arch, student_kwargs(cfg.student), manifest.input_shape, manifest.num_classes)
    decode = space.decode_module(manifest.input_space, manifest.input_shape, manifest.parameters)
    return DistillationModule(student, decode, manifest.num_classes, lr=t.lr, temperature=t.temperature,
                              loss=cfg.loss, schedule=t.schedule, steps_per_epoch=steps_per_epoch,
                              target_scale=target_scale, tolerance=cfg.task.tolerance,
                              margin_weight=cfg.margin_weight)


def regression_scale(split_dir: str, manifest: Manifest) -> OutputScale | None:
    """Per-output standardisation from the training shards, for a regression run (else None)."""
    if manifest.task != "regression":
        return None
    return OutputScale(*target_stats(split_dir, manifest))


class PlateauStop(EarlyStopping):
    """EarlyStopping on a training figure that only counts epochs once the learning rate has fallen
    to `low` times its peak. Under a schedule that anneals (onecycle, cosine), a plateau at the peak
    rate is the schedule's, not the student's: stopping there leaves a student that never annealed.
    A constant rate (`constant_rate`) is watched from the first epoch."""

    def __init__(self, peak_lr: float, constant_rate: bool, low: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float("inf") if constant_rate else low * peak_lr

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.optimizers[0].param_groups[0]["lr"] <= self.threshold:
            super().on_train_epoch_end(trainer, pl_module)


def stopping_rule(cfg: Config) -> EarlyStopping:
    """Training stops when it no longer improves on the training shards (never on a validation
    loss: overfitting is the goal), once the learning rate is low (PlateauStop). A classifier
    watches training agreement; a regression watches its training loss, which keeps falling by
    orders of magnitude long after the share within tolerance is 0 or 1, so any fall at all counts
    as progress."""
    t = cfg.train
    regression = cfg.task.kind == "regression"
    return PlateauStop(t.lr, t.schedule == "constant", monitor="train/loss" if regression else "train/agreement",
                       mode="min" if regression else "max", min_delta=0.0 if regression else t.min_delta,
                       patience=t.patience, check_on_train_epoch_end=True)


def loader_workers(cfg: Config) -> int:
    if cfg.train.loader_workers is not None:
        return cfg.train.loader_workers
    cores_per_rank = (os.cpu_count() or 1) // cfg.train.devices
    return 0 if cores_per_rank <= 4 else min(4, cores_per_rank - 2)


def world_size(cfg: Config) -> int:
    return cfg.train.num_workers if cfg.train.num_workers > 1 else cfg.train.devices


def on_gpu(cfg: Config) -> bool:
    """Whether this process trains on a GPU: train.accelerator allows one, and one is here."""
    return cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def make_trainer(cfg: Config, student_dir: str, strategy=None, devices=None, plugins=()) -> L.Trainer:
    """The Trainer of a run. `strategy`, `devices` and `plugins` are set by Ray Train's workers;
    otherwise they follow train.devices."""
    t = cfg.train
    output.silence_third_party()
    accelerator = "gpu" if t.accelerator == "cuda" else t.accelerator
    gpu = on_gpu(cfg)
    if strategy is None:
        strategy = DDPStrategy(start_method="spawn", timeout=DDP_TIMEOUT) if t.devices > 1 else "auto"
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=accelerator,
        devices=t.devices if devices is None else devices,
        strategy=strategy,
        plugins=[checkpoints.AtomicCheckpointIO(), *plugins],
        precision="bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true",
        deterministic=t.deterministic or None,  # None: leave a calling program's own setting alone
        logger=CSVLogger(student_dir, name="logs"),
        callbacks=[
            # The stopping rule: training agreement no longer rising (not a validation loss).
            stopping_rule(cfg),
            checkpoints.LastCheckpoint(checkpoints.checkpoint_dir(student_dir), t.checkpoint_every_steps),
            LearningRateMonitor(logging_interval="epoch"),
            TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_CALLS) if output.bars() else ProgressLines(),
            *train_faults.from_environment(),
        ],
        reload_dataloaders_every_n_epochs=1,
        check_val_every_n_epoch=t.val_every_epochs,
        num_sanity_val_steps=0,
        log_every_n_steps=20,
        enable_model_summary=False,
        enable_progress_bar=output.bars(),
    )
