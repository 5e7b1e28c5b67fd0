"""The eval stage: how closely does the student copy the teacher, and may it replace it?

On the training shards and the held-out shards (teacher logits read from the shards) and on the
real test split (teacher run here, true labels known), every metric kind of pipeline.metrics:
top-1 / top-5 agreement, KL(teacher || student), Jensen-Shannon divergence, the student's
calibration as a predictor of agreement, the student-vs-teacher confusion matrix (and from it the
agreement per class); on the real test split also both accuracies and both calibration errors.
Then CPU latency of both models, and the report (pipeline.report).

Every committed row is evaluated exactly once. Shards are dealt whole to the evaluators
(`assign_shards`): one process, or `eval.workers` Ray tasks, each returning torchmetrics states
that are merged here. No sampler pads a part to equal length, so nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import numpy as np
import ray
import torch

from pipeline import latency, rundir, shards, storage
from pipeline.config import Config
from pipeline.curves import read_curves
from pipeline.errors import UserError
from pipeline.metrics import Outputs, SplitMetrics, per_class_agreement
from pipeline.ray_session import ray_session
from pipeline.report import Report, write_report
from pipeline.rundir import SPLITS
from pipeline.teacher import load_seed, load_teacher
from pipeline.train import StudentCard, student_card_path, student_from, student_weights_path
from teachers import count_parameters, to_float

AGREEMENT_KINDS = ("top1", "top5", "kl", "js")


def load_student_dir(student_dir: str) -> tuple[torch.nn.Module, StudentCard, bytes]:
    """A trained student from its folder (the run's, or one trial of a sweep): module, card, weights."""
    card_path = student_card_path(student_dir)
    if not storage.exists(card_path):
        raise UserError(f"No trained student in {student_dir}: run the train stage first (expected {card_path}).")
    card = StudentCard(**storage.read_json(card_path))
    weights = storage.read_bytes(student_weights_path(student_dir))
    return student_from(card, weights), card, weights


def assign_shards(manifest: shards.Manifest, part: int, parts: int) -> list[int]:
    """The shard indices evaluator `part` of `parts` reads (a Ray task, or a DDP rank): every committed
    shard in exactly one part, whole, so no row is left out or padded in twice."""
    return sorted(manifest.shards)[part::parts]


@torch.inference_mode()
def evaluate_shards(student: torch.nn.Module, split_dir: str, manifest: shards.Manifest, indices: list[int],
                    batch_size: int, bins: int) -> SplitMetrics:
    """Metric states over every row of the given shards."""
    part = dataclasses.replace(manifest, shards={i: manifest.shards[i] for i in indices})
    metrics = SplitMetrics(manifest.num_classes, bins)
    for batch in shards.iter_batches(split_dir, part, batch_size):
        x = to_float(batch["input"].view(-1, *manifest.input_shape))
        metrics.update(Outputs(student(x), batch["logits"].float()))
    return metrics


@ray.remote(num_cpus=1)
def _evaluate_part(card: StudentCard, weights: bytes, split_dir: str, manifest: shards.Manifest, indices: list[int],
                   batch_size: int, bins: int) -> SplitMetrics:
    torch.set_num_threads(1)  # one core per task (num_cpus=1): parallel tasks must not oversubscribe
    return evaluate_shards(student_from(card, weights), split_dir, manifest, indices, batch_size, bins)


def evaluate_split(student: torch.nn.Module, card: StudentCard, weights, split_dir: str, batch_size: int,
                   bins: int = 15, workers: int = 1) -> SplitMetrics:
    """One split's metrics, in this process (workers=1) or in up to `workers` Ray tasks (Ray must be
    initialized), merged; `weights` may be bytes or a Ray object ref to them."""
    manifest = shards.require_manifest(split_dir)
    parts = min(workers, len(manifest.shards))
    if parts <= 1:
        return evaluate_shards(student, split_dir, manifest, sorted(manifest.shards), batch_size, bins)
    refs = [_evaluate_part.remote(card, weights, split_dir, manifest, assign_shards(manifest, p, parts), batch_size, bins)
            for p in range(parts)]
    return functools.reduce(SplitMetrics.merge, ray.get(refs), SplitMetrics(manifest.num_classes, bins))


@torch.inference_mode()
def evaluate_images(student: torch.nn.Module, teacher: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
                    num_classes: int, batch_size: int, bins: int = 15) -> SplitMetrics:
    """Metrics on real labeled images: the teacher runs here, and true labels add both accuracies."""
    metrics = SplitMetrics(num_classes, bins, labeled=True)
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[start: start + batch_size]))
        y = torch.as_tensor(labels[start: start + batch_size], dtype=torch.long)
        metrics.update(Outputs(student(x), teacher(x).float(), y))
    return metrics


def report_sections(values: dict[str, dict]) -> dict:
    """Split -> computed metric values, reshaped into the report's sections."""
    out = {"agreement": {}, "calibration": {}, "reliability": {}, "per_class_agreement": {}, "confusion": {}}
    for split, v in values.items():
        out["agreement"][split] = {**{k: v[k] for k in AGREEMENT_KINDS}, "samples": v["samples"]}
        sources = {"student_vs_teacher": "ece", "teacher": "teacher_ece", "student": "student_ece"}
        present = {name: v[kind] for name, kind in sources.items() if kind in v}
        out["calibration"][split] = {name: (c or {}).get("ece") for name, c in present.items()}
        out["reliability"][split] = {name: c["bins"] for name, c in present.items() if c}
        out["per_class_agreement"][split] = per_class_agreement(v["confusion"])
        out["confusion"][split] = v["confusion"]
    return out


def _evaluate_splits(cfg: Config, paths: rundir.RunPaths, student, card: StudentCard, weights: bytes) -> dict:
    e = cfg.eval
    parallel = e.workers > 1
    with ray_session(cfg.address) if parallel else contextlib.nullcontext():
        shared = ray.put(weights) if parallel else weights  # one copy for all the tasks
        return {s: evaluate_split(student, card, shared, paths.split(s), e.batch_size, e.calibration_bins,
                                  e.workers).compute() for s in SPLITS}


def run_eval_stage(cfg: Config) -> Report:
    from pipeline.sweep import load_sweep  # the sweep builds on this module

    paths = rundir.prepare(cfg)
    teacher, teacher_card = load_teacher(paths)
    student, student_card, weights = load_student_dir(paths.student_dir)
    if student_card.teacher_fingerprint != teacher_card.fingerprint:
        raise UserError(f"{paths.student_card} was trained on a different teacher's labels than {paths.teacher_card}.")
    seed = load_seed(cfg)
    values = _evaluate_splits(cfg, paths, student, student_card, weights)
    test = evaluate_images(student, teacher, seed.test_images, seed.test_labels, teacher_card.num_classes,
                           cfg.eval.batch_size, cfg.eval.calibration_bins).compute()
    values["test"] = test
    rejected = {split: sum(r.rejected for r in shards.require_manifest(paths.split(split)).records())
                for split in SPLITS}
    lat = None
    if cfg.eval.latency:
        lat = latency.compare(teacher, student, teacher_card.input_shape, cfg.eval.latency_threads,
                              cfg.eval.latency_seconds)
    report = Report(
        **report_sections(values),
        accuracy={"teacher": test["teacher_accuracy"], "student": test["student_accuracy"],
                  "test_samples": test["samples"]},
        params={"teacher": count_parameters(teacher), "student": count_parameters(student)},
        teacher={"arch": teacher_card.arch, "fingerprint": teacher_card.fingerprint, "dataset": teacher_card.dataset},
        student={"arch": student_card.arch, "width": student_card.width, "depth": student_card.depth,
                 "epochs": student_card.epochs},
        rejected_rows=rejected,
        min_agreement=cfg.eval.min_agreement,
        classes=list(teacher_card.classes),
        latency=lat,
        curves=read_curves(paths.student_dir),
        sweep=load_sweep(paths),
    )
    write_report(paths, report)
    return report
