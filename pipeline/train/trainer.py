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

from pipeline import track
from pipeline.config import Config
from pipeline.inputs import space
from pipeline.shards import Manifest
from pipeline.run import output
from pipeline.train import checkpoints
from pipeline.train.progress import ProgressLines
from pipeline.train import faults as train_faults
from pipeline.train.student import build_student, student_kwargs
from pipeline import shards
from pipeline.tasks import get_task
from students import DistillationModule
from students.scale import OutputScale

PROGRESS_REFRESH_CALLS = 4  # training_step calls (of data.STEPS_PER_CALL steps each) between bar redraws
# A rank that stops answering fails the job after this long instead of holding the others forever
# (a rank that dies is noticed at once: its peers' collectives fail).
DDP_TIMEOUT = timedelta(minutes=10)


def build_module(cfg: Config, manifest: Manifest, steps_per_epoch: int,
                 target_scale: OutputScale | None = None) -> DistillationModule:
    """The run's module with its seeded initial weights (the same in every process that builds it):
    the student, the input space's decoding and the task's objective. A task that fits an output
    scale on the training targets passes it as `target_scale` (output_scale)."""
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    t = cfg.train
    student = build_student(cfg.student.arch, student_kwargs(cfg.student, manifest.target_shape), manifest.input_shape, manifest.num_classes)
    decode = space.decode_module(manifest.input_space, manifest.input_shape, manifest.parameters)
    objective = get_task(manifest.task).objective(cfg, target_scale)
    return DistillationModule(student, decode, objective, lr=t.lr, schedule=t.schedule, steps_per_epoch=steps_per_epoch)


def output_scale(cfg: Config, split_dir: str, manifest: Manifest) -> OutputScale | None:
    """What the task fits on the training targets to scale the student's outputs (regression: the
    target transform and the per-output standardisation), or None."""
    return get_task(manifest.task).output_scale(
        cfg, lambda: shards.iter_batches(split_dir, manifest, 65536, columns=(manifest.target_column,)),
        manifest.target_shape)


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
    loss: overfitting is the goal), once the learning rate is low (PlateauStop). Which training
    figure is watched, and what counts as a rise, is the task's (a classifier's agreement, a
    regression's loss)."""
    t = cfg.train
    return PlateauStop(t.lr, t.schedule == "constant", **get_task(cfg.task.kind).stopping(cfg),
                       patience=t.patience, check_on_train_epoch_end=True)


def loader_workers(cfg: Config, recipes: bool = False) -> int:
    """train.loader_workers, or the choice for this machine: none on a few cores (a worker process
    would take a core from the student's threads for little), except over shards of recipes, where
    one worker remakes the next inputs while the student trains on the last."""
    if cfg.train.loader_workers is not None:
        return cfg.train.loader_workers
    cores_per_rank = (os.cpu_count() or 1) // cfg.train.devices
    return (1 if recipes else 0) if cores_per_rank <= 4 else min(4, cores_per_rank - 2)


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
        # The CSV logs are the run's own record of its curves; a tracker bound to the run (--track.to) gets
        # them too, live, through Lightning's MLFlowLogger or TensorBoardLogger (which log from rank 0).
        logger=[CSVLogger(student_dir, name="logs"), *track.lightning_loggers(cfg)],
        callbacks=[
            # The stopping rule: training agreement no longer rising (not a validation loss).
            stopping_rule(cfg),
            checkpoints.LastCheckpoint(checkpoints.checkpoint_dir(student_dir), t.checkpoint_every_steps),
            LearningRateMonitor(logging_interval="epoch"),
            TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_CALLS) if output.bars()
            else ProgressLines(get_task(cfg.task.kind).figure_words),
            *train_faults.from_environment(),
        ],
        reload_dataloaders_every_n_epochs=1,
        check_val_every_n_epoch=t.val_every_epochs,
        num_sanity_val_steps=0,
        log_every_n_steps=20,
        enable_model_summary=False,
        enable_progress_bar=output.bars(),
    )
