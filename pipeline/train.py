"""The train stage: Lightning fits the student to the teacher's logits streamed from the shards.

Output: DIR/student/student.safetensors and student.json (the card, written last: its presence
means training finished), Lightning checkpoints in DIR/student/checkpoints, and CSV training
curves in DIR/student/logs.

`train.devices N` runs N DDP processes on this machine (gloo on CPU, nccl on GPU). They are
spawned rather than re-launched from the command line, so the stage works the same when called
from the CLI, from `run`, from a test, or from a user's own pipeline.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from safetensors.torch import save as save_safetensors
from torch.utils.data import DataLoader

from pipeline import rundir, shards, storage
from pipeline.config import Config
from pipeline.errors import UserError
from students import STUDENTS, DistillationModule
from teachers import count_parameters

EVAL_SPLIT = "heldout"
PROGRESS_REFRESH_STEPS = 25


class ShardDataModule(L.LightningDataModule):
    """Training batches from the train shards, validation batches from the held-out shards."""

    def __init__(self, paths: rundir.RunPaths, batch_size: int, seed: int, loader_workers: int):
        super().__init__()
        self.paths, self.batch_size, self.seed, self.loader_workers = paths, batch_size, seed, loader_workers
        self.train_manifest = shards.require_manifest(paths.split("train"))
        self.heldout_manifest = shards.load_manifest(paths.split(EVAL_SPLIT))

    def setup(self, stage: str) -> None:
        # Runs in every DDP process, after the process group exists: each rank builds its own slice.
        rank, world = self.trainer.global_rank, self.trainer.world_size
        self.train_set = shards.ShardStream(self.paths.split("train"), self.train_manifest, self.batch_size,
                                            self.seed, rank, world)
        self.val_set = None
        if self.heldout_manifest is not None and self.heldout_manifest.rows >= world * self.batch_size:
            self.val_set = shards.ShardStream(self.paths.split(EVAL_SPLIT), self.heldout_manifest, self.batch_size,
                                              self.seed, rank, world)

    def _loader(self, dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=self.loader_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        # Called again every epoch (reload_dataloaders_every_n_epochs=1): a new order each epoch.
        self.train_set.set_epoch(self.trainer.current_epoch)
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set) if self.val_set is not None else []


@dataclass
class StudentCard:
    arch: str
    width: int
    depth: int
    input_shape: list[int]
    classes: list[str]
    params: int
    teacher_fingerprint: str
    epochs: int
    steps: int
    train_agreement: float | None
    heldout_agreement: float | None


@dataclass
class TrainResult:
    weights: str
    card: StudentCard
    action: str  # "trained" or "reused"


def build_student(arch: str, width: int, depth: int, input_shape, num_classes: int) -> torch.nn.Module:
    if arch not in STUDENTS:
        raise UserError(f"student.arch {arch!r} is unknown; expected one of: {', '.join(STUDENTS.names())}.")
    return STUDENTS.build(arch, input_shape=tuple(input_shape), num_classes=num_classes, width=width, depth=depth)


def loader_workers(cfg: Config) -> int:
    if cfg.train.loader_workers is not None:
        return cfg.train.loader_workers
    cores_per_rank = (os.cpu_count() or 1) // cfg.train.devices
    return 0 if cores_per_rank <= 4 else min(4, cores_per_rank - 2)


def _trainer(cfg: Config, student_dir: str) -> L.Trainer:
    t = cfg.train
    accelerator = "gpu" if t.accelerator == "cuda" else t.accelerator
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    strategy = "ddp_spawn" if t.devices > 1 else "auto"
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=accelerator,
        devices=t.devices,
        strategy=strategy,
        precision="bf16-mixed" if on_gpu else "32-true",
        logger=CSVLogger(student_dir, name="logs"),
        callbacks=[
            # The stopping rule: training agreement no longer rising (not a validation loss).
            EarlyStopping(monitor="train/agreement", mode="max", patience=t.patience, min_delta=t.min_delta,
                          check_on_train_epoch_end=True),
            ModelCheckpoint(dirpath=storage.join(student_dir, "checkpoints"), save_last=True, save_top_k=0),
            LearningRateMonitor(logging_interval="epoch"),
            # Redrawing the bar every step costs more than a small student's step.
            TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS),
        ],
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        log_every_n_steps=20,
        enable_model_summary=False,
    )


def student_weights_path(student_dir: str) -> str:
    return storage.join(student_dir, "student.safetensors")


def student_card_path(student_dir: str) -> str:
    return storage.join(student_dir, "student.json")


def fit_student(cfg: Config, paths: rundir.RunPaths, student_dir: str) -> StudentCard:
    """Train `cfg.student` on the run's shards; write its weights, card (last), checkpoints and
    training curves under `student_dir`. The building block of the train stage and of sweeps."""
    if not storage.exists(paths.teacher_card):
        raise UserError(f"No teacher in {paths.root}: run the teacher and label stages first.")
    teacher_card = storage.read_json(paths.teacher_card)
    data = ShardDataModule(paths, cfg.train.batch_size, cfg.train.seed, loader_workers(cfg))
    manifest = data.train_manifest
    if manifest.teacher_fingerprint != teacher_card["fingerprint"]:
        raise UserError(f"{paths.split('train')} was labeled by a different teacher than {paths.teacher_card}.")
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    s = cfg.student
    student = build_student(s.arch, s.width, s.depth, manifest.input_shape, manifest.num_classes)
    module = DistillationModule(student, tuple(manifest.input_shape), manifest.num_classes, lr=cfg.train.lr,
                                temperature=cfg.train.temperature, loss=cfg.train.loss)
    trainer = _trainer(cfg, student_dir)
    trainer.fit(module, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    card = StudentCard(
        arch=s.arch, width=s.width, depth=s.depth,
        input_shape=list(manifest.input_shape), classes=teacher_card["classes"], params=count_parameters(student),
        teacher_fingerprint=manifest.teacher_fingerprint, epochs=int(metrics["progress/epochs"]),
        steps=int(metrics["progress/steps"]),
        train_agreement=metrics.get("train/agreement"), heldout_agreement=metrics.get("val/agreement"),
    )
    state = {k: v.detach().cpu().contiguous() for k, v in module.student.state_dict().items()}
    storage.write_bytes_atomic(student_weights_path(student_dir), save_safetensors(state))
    storage.write_bytes_atomic(student_card_path(student_dir), (json.dumps(asdict(card), indent=2) + "\n").encode())
    return card


def run_train_stage(cfg: Config) -> TrainResult:
    paths = rundir.prepare(cfg)
    if storage.exists(paths.student_card):
        card = StudentCard(**storage.read_json(paths.student_card))
        return TrainResult(paths.student_weights, card, "reused")
    card = fit_student(cfg, paths, paths.student_dir)
    return TrainResult(paths.student_weights, card, "trained")
