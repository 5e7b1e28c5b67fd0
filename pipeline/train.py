"""The train stage: Lightning fits the student to the teacher's logits streamed from the shards.

Output: DIR/student/student.safetensors, student.onnx (pipeline/export.py) and student.json (the
card, written after the weights: its presence means training finished), Lightning checkpoints in
DIR/student/checkpoints, and CSV training curves in DIR/student/logs.

Where it runs:
- one process (the default), or `train.devices N` DDP processes on this machine (gloo on CPU, nccl
  on GPU). They are spawned rather than re-launched from the command line, so the stage works the
  same when called from the CLI, from `run`, from a test, or from a user's own pipeline;
- `train.num_workers N > 1`: N Ray Train workers anywhere on a Ray cluster (pipeline/ray_train.py).

A killed run continues with `--resume` from its last checkpoint (every `checkpoint_every_steps`),
mid-epoch included: the data loader's position is part of the checkpoint (pipeline/train_data.py).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from pipeline import checkpoints, rundir, storage, train_faults
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.shards import Manifest
from pipeline.train_data import ShardDataModule
from students import STUDENTS, DistillationModule
from teachers import count_parameters

log = logging.getLogger(__name__)

PROGRESS_REFRESH_STEPS = 25
# A rank that stops answering fails the job after this long instead of holding the others forever
# (a rank that dies is noticed at once: its peers' collectives fail).
DDP_TIMEOUT = timedelta(minutes=10)


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
    action: str  # "trained", "resumed" or "reused"


def build_student(arch: str, width: int, depth: int, input_shape, num_classes: int) -> torch.nn.Module:
    if arch not in STUDENTS:
        raise UserError(f"student.arch {arch!r} is unknown; expected one of: {', '.join(STUDENTS.names())}.")
    return STUDENTS.build(arch, input_shape=tuple(input_shape), num_classes=num_classes, width=width, depth=depth)


def build_module(cfg: Config, manifest: Manifest, steps_per_epoch: int) -> DistillationModule:
    """The run's module with its seeded initial weights (the same in every process that builds it)."""
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    s, t = cfg.student, cfg.train
    student = build_student(s.arch, s.width, s.depth, manifest.input_shape, manifest.num_classes)
    return DistillationModule(student, tuple(manifest.input_shape), manifest.num_classes, lr=t.lr,
                              temperature=t.temperature, loss=t.loss, schedule=t.schedule,
                              steps_per_epoch=steps_per_epoch)


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
            EarlyStopping(monitor="train/agreement", mode="max", patience=t.patience, min_delta=t.min_delta,
                          check_on_train_epoch_end=True),
            ModelCheckpoint(dirpath=checkpoints.checkpoint_dir(student_dir), save_last=True, save_top_k=0,
                            every_n_train_steps=t.checkpoint_every_steps or None),
            LearningRateMonitor(logging_interval="epoch"),
            # Redrawing the bar every step costs more than a small student's step.
            TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS),
            *train_faults.from_environment(),
        ],
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        log_every_n_steps=20,
        enable_model_summary=False,
    )


def student_weights_path(student_dir: str) -> str:
    return storage.join(student_dir, rundir.STUDENT_WEIGHTS)


def student_card_path(student_dir: str) -> str:
    return storage.join(student_dir, rundir.STUDENT_CARD)


def save_weights(student: torch.nn.Module, student_dir: str) -> None:
    state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in student.state_dict().items()}
    storage.write_bytes_atomic(student_weights_path(student_dir), save_safetensors(state))


def _data(cfg: Config, paths: rundir.RunPaths) -> tuple[ShardDataModule, dict]:
    """The run's shards and its teacher's card, refusing shards the teacher did not label."""
    if not storage.exists(paths.teacher_card):
        raise UserError(f"No teacher in {paths.root}: run the teacher and label stages first.")
    teacher_card = storage.read_json(paths.teacher_card)
    data = ShardDataModule(paths, cfg.train.batch_size, cfg.train.seed, loader_workers(cfg))
    if data.train_manifest.teacher_fingerprint != teacher_card["fingerprint"]:
        raise UserError(f"{paths.split('train')} was labeled by a different teacher than {paths.teacher_card}.")
    return data, teacher_card


def _fit_here(cfg: Config, module: DistillationModule, data: ShardDataModule, student_dir: str,
              resume: Optional[checkpoints.ResumePoint]) -> dict[str, float]:
    """Lightning in this process (and its spawned DDP ranks); the trained weights end up in `module`."""
    trainer = make_trainer(cfg, student_dir)
    trainer.fit(module, datamodule=data, ckpt_path=resume.path if resume else None)
    save_weights(module.student, student_dir)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def fit_student(cfg: Config, paths: rundir.RunPaths, student_dir: str, preflight: bool = False) -> StudentCard:
    """Train `cfg.student` on the run's shards; write its weights, card (last), checkpoints and
    training curves under `student_dir`. The building block of the train stage and of sweeps.

    With `preflight` (the train stage passes train.preflight), a fresh run first checks that the
    student can memorise a few examples (pipeline/preflight.py)."""
    data, teacher_card = _data(cfg, paths)
    manifest = data.train_manifest
    world = world_size(cfg)
    if data.batches_per_epoch(world) == 0:
        raise UserError(f"{paths.split('train')} holds {manifest.rows} rows, fewer than one batch of "
                        f"{cfg.train.batch_size} for each of {world} rank(s): lower train.batch_size "
                        "or generate more data.")
    resume = checkpoints.resume_point(student_dir, cfg.train.resume, world)
    module = build_module(cfg, manifest, data.batches_per_epoch(world))
    if preflight and resume is None:
        from pipeline.preflight import run_preflight

        result = run_preflight(module, data.first_batch(), cfg.train.lr, cfg.train.preflight_steps,
                               "cuda" if on_gpu(cfg) else "cpu")
        log.info("Preflight passed: loss %.4g -> %.4g in %d steps.", result.first_loss, result.last_loss, result.steps)
    if resume is not None:
        log.warning("Resuming from %s (step %d).", resume.path, resume.step)
    try:
        if cfg.train.num_workers > 1:
            from pipeline.ray_train import fit_on_ray

            metrics = fit_on_ray(cfg, paths, student_dir, resume.path if resume else None)
        else:
            metrics = _fit_here(cfg, module, data, student_dir, resume)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception:
        log.error("Training failed; its last checkpoint is in %s: continue it with --resume.",
                  checkpoints.checkpoint_dir(student_dir))
        raise
    if "progress/epochs" not in metrics and resume is not None:
        # Resumed from a checkpoint of the very last step: nothing was left to train or log.
        metrics.update({"progress/epochs": resume.epoch + 1, "progress/steps": resume.step})
    s = cfg.student
    card = StudentCard(
        arch=s.arch, width=s.width, depth=s.depth,
        input_shape=list(manifest.input_shape), classes=teacher_card["classes"],
        params=count_parameters(module.student), teacher_fingerprint=manifest.teacher_fingerprint,
        epochs=int(metrics["progress/epochs"]), steps=int(metrics["progress/steps"]),
        train_agreement=metrics.get("train/agreement"), heldout_agreement=metrics.get("val/agreement"),
    )
    storage.write_bytes_atomic(student_card_path(student_dir), (json.dumps(asdict(card), indent=2) + "\n").encode())
    return card


def student_from(card: StudentCard, weights: bytes) -> torch.nn.Module:
    """A trained student, in eval mode, from its card and safetensors bytes."""
    student = build_student(card.arch, card.width, card.depth, card.input_shape, len(card.classes))
    student.load_state_dict(load_safetensors(weights))
    return student.eval()


def _ensure_export(student_dir: str, card: StudentCard) -> None:
    """Write student.onnx if it is missing. A student the exporter cannot handle (an operator ONNX
    lacks, in a user's own architecture) keeps its weights and card: the export is a convenience
    beside student.safetensors, so its failure is reported, not fatal."""
    from pipeline.export import export_onnx, onnx_path

    if storage.exists(onnx_path(student_dir)):
        return
    try:
        weights = storage.read_bytes(student_weights_path(student_dir))
        export_onnx(student_from(card, weights), card.input_shape, student_dir)
    except Exception as exc:  # torch.onnx raises several unrelated types
        log.warning("Could not export the student to ONNX (%s: %s); it is in %s.", type(exc).__name__, exc,
                    student_weights_path(student_dir))


def run_train_stage(cfg: Config) -> TrainResult:
    paths = rundir.prepare(cfg)
    if storage.exists(paths.student_card):
        card = StudentCard(**storage.read_json(paths.student_card))
        _ensure_export(paths.student_dir, card)  # a run stopped between card and export
        return TrainResult(paths.student_weights, card, "reused")
    resumed = cfg.train.resume and storage.exists(checkpoints.last_checkpoint(paths.student_dir))
    card = fit_student(cfg, paths, paths.student_dir, preflight=cfg.train.preflight)
    _ensure_export(paths.student_dir, card)
    return TrainResult(paths.student_weights, card, "resumed" if resumed else "trained")
