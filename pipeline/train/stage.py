"""The train stage: Lightning fits the student to the teacher's logits streamed from the shards.

Output: DIR/student/student.safetensors, student.onnx (pipeline/train/export.py) and student.json (the
card, written after the weights: its presence means training finished), Lightning checkpoints in
DIR/student/checkpoints, and CSV training curves in DIR/student/logs.

Where it runs:
- one process (the default), or `train.devices N` DDP processes on this machine (gloo on CPU, nccl
  on GPU). They are spawned rather than re-launched from the command line, so the stage works the
  same when called from the CLI, from `run`, from a test, or from a user's own pipeline;
- `train.num_workers N > 1`: N Ray Train workers anywhere on a Ray cluster (pipeline/train/on_ray.py).

A killed run continues with `--resume` from its last checkpoint (every `checkpoint_every_steps`),
mid-epoch included: the data loader's position is part of the checkpoint (pipeline/train/data.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys

import torch
from dataclasses import dataclass
from typing import Optional

from pipeline import shards, track
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.inputs import get_space, space
from pipeline.resolve import add_code_dir
from pipeline.run import rundir, storage
from pipeline.run.lock import locked
from pipeline.train import checkpoints
from pipeline.train.data import ShardDataModule, steps_per_call
from pipeline.train.export import export_onnx, onnx_path, record_export_failure
from pipeline.train.on_ray import fit_on_ray
from pipeline.train.preflight import run_preflight
from pipeline.train.student import (
    StudentCard, describe_scale, load_student_dir, read_card, save_card, save_weights, student_kwargs, transform_record,
)
from pipeline.train.trainer import build_module, loader_workers, make_trainer, on_gpu, output_scale, world_size
from students import DistillationModule
from teachers import count_parameters

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    weights: str
    card: StudentCard
    action: str  # "trained", "resumed" or "reused"


def _data(cfg: Config, paths: rundir.RunPaths) -> tuple[ShardDataModule, dict]:
    """The run's shards and its teacher's card, refusing shards the teacher did not label."""
    if not storage.exists(paths.teacher_card):
        raise UserError(f"No teacher in {paths.root}: run the teacher and label stages first.")
    teacher_card = storage.read_json(paths.teacher_card)
    train_manifest = shards.load_manifest(paths.split("train"))
    recipes = bool(train_manifest and train_manifest.recipe)
    data = ShardDataModule(paths, cfg.train.batch_size, cfg.train.seed, loader_workers(cfg, recipes),
                           steps_per_call(cfg.train.checkpoint_every_steps), cfg.train.memory_budget_mb)
    if data.train_manifest.teacher_fingerprint != teacher_card["fingerprint"]:
        raise UserError(f"{paths.split('train')} was labeled by a different teacher than {paths.teacher_card}.")
    return data, teacher_card


def _fit_here(cfg: Config, module: DistillationModule, data: ShardDataModule, student_dir: str,
              resume: Optional[checkpoints.ResumePoint]) -> dict[str, float]:
    """Lightning in this process (and its spawned DDP ranks); the trained weights end up in `module`."""
    trainer = make_trainer(cfg, student_dir)
    # Lightning draws its bar on stdout, which is for results: progress belongs on stderr.
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, datamodule=data, ckpt_path=resume.path if resume else None)
    save_weights(module.student, student_dir)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def fit_student(cfg: Config, paths: rundir.RunPaths, student_dir: str, preflight: bool = False) -> StudentCard:
    """Train `cfg.student` on the run's shards; write its weights, card (last), checkpoints and
    training curves under `student_dir`. The building block of the train stage and of sweeps.

    With `preflight` (the train stage passes train.preflight), a fresh run first checks that the
    student can memorise a few examples (pipeline/train/preflight.py)."""
    data, teacher_card = _data(cfg, paths)
    manifest = data.train_manifest
    world = world_size(cfg)
    if data.batches_per_epoch(world) == 0:
        raise UserError(f"{paths.split('train')} holds {manifest.rows} rows, fewer than one batch of "
                        f"{cfg.train.batch_size} for each of {world} rank(s): lower train.batch_size "
                        "or generate more data.")
    resume = checkpoints.resume_point(student_dir, cfg.train.resume, world, data.steps_per_call)
    scale = output_scale(cfg, paths.split("train"), manifest)
    if scale is not None:  # what was chosen from the data is said
        log.info("Targets: %s.", describe_scale(scale))
    module = build_module(cfg, manifest, data.batches_per_epoch(world), scale)
    if preflight and resume is None:
        result = run_preflight(module, data.first_batch(), cfg.train.lr, cfg.train.preflight_steps,
                               "cuda" if on_gpu(cfg) else "cpu")
        log.info("Preflight passed: loss %.4g -> %.4g in %d steps.", result.first_loss, result.last_loss, result.steps)
    if resume is not None:
        log.warning("Resuming from %s (step %d).", resume.path, resume.step)
    try:
        if cfg.train.num_workers > 1:
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
    card = StudentCard(
        arch=cfg.student.arch, kwargs=student_kwargs(cfg.student, manifest.target_shape), input_space=manifest.input_space,
        task=manifest.task, parameters=manifest.parameters,
        target_mean=scale.mean.tolist() if scale is not None else None,
        target_std=scale.std.tolist() if scale is not None else None,
        target_transform=transform_record(scale),
        input_shape=list(manifest.input_shape), classes=teacher_card["classes"],
        params=count_parameters(module.student), teacher_fingerprint=manifest.teacher_fingerprint,
        epochs=int(metrics["progress/epochs"]), steps=int(metrics["progress/steps"]),
        train_agreement=metrics.get("train/agreement"), heldout_agreement=metrics.get("val/agreement"),
    )
    save_card(card, student_dir)
    return card


def _ensure_export(student_dir: str) -> None:
    """Write student.onnx if it is missing. A student the exporter cannot handle (an operator ONNX
    lacks, in a user's own architecture) keeps its weights and card: the export is a convenience
    beside student.safetensors, so its failure is reported, not fatal, and recorded, so that the run
    can finish without the file (pipeline/train/export.py)."""
    if storage.exists(onnx_path(student_dir)):
        return
    try:
        student, card, _ = load_student_dir(student_dir)
        if get_space(card.input_space).exported_takes_stored:  # e.g. physical parameter values, decoding inside
            student = torch.nn.Sequential(space.decode_module(card.input_space, card.input_shape, card.parameters),
                                          student)
        export_onnx(student, card.input_shape, student_dir)
    except Exception as exc:  # torch.onnx raises several unrelated types
        record_export_failure(student_dir, exc)
        log.warning("Could not export the student to ONNX (%s: %s); it is in %s.", type(exc).__name__, exc,
                    storage.join(student_dir, rundir.STUDENT_WEIGHTS))


def student_files(student_dir: str) -> track.StudentFiles:
    """A trained student's files as a tracker or a registry takes them: the ONNX file (where the export
    succeeded), the weights and the card, and the weights' sha256 (the student's identity)."""
    onnx = onnx_path(student_dir)
    weights = storage.join(student_dir, rundir.STUDENT_WEIGHTS)
    return track.StudentFiles(onnx if storage.exists(onnx) else None,
                              (weights, storage.join(student_dir, rundir.STUDENT_CARD)),
                              hashlib.sha256(storage.read_bytes(weights)).hexdigest())


def track_student(cfg: Config, student_dir: str, trained: bool) -> None:
    """Send a student and its curves to the tracker of `cfg` (--track.to); nothing without one.
    `trained`: here and now, under the bound run's logger, which sent the curves as they came."""
    if track.enabled(cfg):
        track.log_training(cfg, storage.join(student_dir, "logs"), student_files(student_dir), trained)


@locked
def run_train_stage(cfg: Config) -> TrainResult:
    paths = rundir.prepare(cfg)
    add_code_dir(cfg.code_dir)
    cfg = track.bind(cfg)  # the tracker's run (--track.to), opened before hours of training
    if storage.exists(paths.student_card):
        card = read_card(paths.student_dir)
        _ensure_export(paths.student_dir)  # a run stopped between card and export
        track_student(cfg, paths.student_dir, trained=False)
        return TrainResult(paths.student_weights, card, "reused")
    resumed = cfg.train.resume and storage.exists(checkpoints.last_checkpoint(paths.student_dir))
    card = fit_student(cfg, paths, paths.student_dir, preflight=cfg.train.preflight)
    _ensure_export(paths.student_dir)
    track_student(cfg, paths.student_dir, trained=True)
    return TrainResult(paths.student_weights, card, "resumed" if resumed else "trained")
