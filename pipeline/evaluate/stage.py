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
The held-out scan also keeps its worst rows for the report's gallery (pipeline.evaluate.worst),
merged the same way.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools

import numpy as np
import ray
import torch

from pipeline import shards
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.evaluate import latency, regression
from pipeline.evaluate.curves import read_curves
from pipeline.evaluate.report import Report
from pipeline.evaluate.worst import GALLERY_SIZE, WorstRows
from pipeline.inputs import space
from pipeline.resolve import add_code_dir
from pipeline.run import rundir, storage
from pipeline.run.ray_session import ray_session
from pipeline.run.rundir import SPLITS
from pipeline.tasks.metrics import Outputs, SplitMetrics, per_class_agreement
from pipeline.tasks.regression import RegressionMetrics
from pipeline.tasks.task import REGRESSION
from pipeline.teach.load import load_teacher
from pipeline.teach.stage import load_seed
from pipeline.train.student import StudentCard, load_student_dir, student_from
from teachers import count_parameters

AGREEMENT_KINDS = ("top1", "top5", "kl", "js")


def assign_shards(manifest: shards.Manifest, part: int, parts: int) -> list[int]:
    """The shard indices evaluator `part` of `parts` reads (a Ray task, or a DDP rank): every committed
    shard in exactly one part, whole, so no row is left out or padded in twice."""
    return sorted(manifest.shards)[part::parts]


def new_metrics(manifest: shards.Manifest, bins: int, tolerance: float) -> SplitMetrics | RegressionMetrics:
    """Empty metric states of the manifest's task."""
    if manifest.task == REGRESSION:
        return RegressionMetrics(manifest.num_classes, tolerance)
    return SplitMetrics(manifest.num_classes, bins)


class Scan:
    """What one pass over (part of) a split gives: its metric states and, when asked for, its worst
    rows (pipeline.evaluate.worst); parts merge and compute together."""

    def __init__(self, metrics: SplitMetrics | RegressionMetrics, worst: WorstRows | None = None):
        self.metrics, self.worst = metrics, worst

    def merge(self, other: Scan) -> Scan:
        self.metrics.merge(other.metrics)
        if self.worst is not None:
            self.worst.merge(other.worst)
        return self

    def compute(self) -> dict:
        """The metrics' values, plus "worst" (the kept rows, worst first) when worst rows were kept."""
        values = self.metrics.compute()
        return values if self.worst is None else {**values, "worst": self.worst.rows}


def new_scan(manifest: shards.Manifest, bins: int, tolerance: float, worst=0) -> Scan:
    """Empty metric states of the manifest's task, and a worst-row keeper for a classification split.
    `worst` may also be a row keeper of one's own (any task; e.g. pipeline.adapt.score), copied empty:
    its update(student, teacher, inputs, shard, file, first_row) sees every row once."""
    if not isinstance(worst, int):
        return Scan(new_metrics(manifest, bins, tolerance), copy.deepcopy(worst))
    keep = WorstRows(worst) if worst and manifest.task != REGRESSION else None
    return Scan(new_metrics(manifest, bins, tolerance), keep)


@torch.inference_mode()
def evaluate_shards(student: torch.nn.Module, split_dir: str, manifest: shards.Manifest, indices: list[int],
                    batch_size: int, bins: int, tolerance: float = 0.01, worst=0) -> Scan:
    """Metric states over every row of the given shards (and their `worst` worst rows, classification).
    Shard by shard, so each batch knows its rows' positions; the batches are those of one pass."""
    scan = new_scan(manifest, bins, tolerance, worst)
    decode = space.decode_module(manifest.input_space, manifest.input_shape, manifest.parameters)
    target = manifest.target_column
    for index in indices:
        record, row = manifest.shards[index], 0
        one = dataclasses.replace(manifest, shards={index: record})
        for batch in shards.iter_batches(split_dir, one, batch_size):
            predicted = student(decode(batch["input"]))
            teacher = batch[target].float()
            if manifest.task == REGRESSION:
                scan.metrics.update(predicted, teacher)
            else:
                scan.metrics.update(Outputs(predicted, teacher))
            if scan.worst is not None:
                # Shards hold each input flat; the gallery keeps it in its own shape.
                inputs = batch["input"].reshape(-1, *manifest.input_shape)
                scan.worst.update(predicted, teacher, inputs, index, record.path, row)
            row += len(predicted)
    return scan


@ray.remote(num_cpus=1)
def _evaluate_part(card: StudentCard, weights: bytes, split_dir: str, manifest: shards.Manifest, indices: list[int],
                   batch_size: int, bins: int, tolerance: float, worst):
    torch.set_num_threads(1)  # one core per task (num_cpus=1): parallel tasks must not oversubscribe
    return evaluate_shards(student_from(card, weights), split_dir, manifest, indices, batch_size, bins, tolerance,
                           worst)


def evaluate_split(student: torch.nn.Module, card: StudentCard, weights, split_dir: str, batch_size: int,
                   bins: int = 15, workers: int = 1, tolerance: float = 0.01, worst=0) -> Scan:
    """One split's metrics (and its `worst` worst rows), in this process (workers=1) or in up to
    `workers` Ray tasks (Ray must be initialized), merged; `weights` may be bytes or a Ray object ref."""
    manifest = shards.require_manifest(split_dir)
    parts = min(workers, len(manifest.shards))
    if parts <= 1:
        return evaluate_shards(student, split_dir, manifest, sorted(manifest.shards), batch_size, bins, tolerance,
                               worst)
    refs = [_evaluate_part.remote(card, weights, split_dir, manifest, assign_shards(manifest, p, parts), batch_size,
                                  bins, tolerance, worst) for p in range(parts)]
    return functools.reduce(lambda a, b: a.merge(b), ray.get(refs), new_scan(manifest, bins, tolerance, worst))


@torch.inference_mode()
def evaluate_real(student: torch.nn.Module, teacher, inputs: np.ndarray, labels: np.ndarray | None,
                  input_space: str, num_classes: int, batch_size: int, bins: int = 15) -> SplitMetrics:
    """Metrics on real data (stored form, e.g. uint8 images): the teacher runs here; true labels, where
    the data has them, add both accuracies and calibration against them."""
    metrics = SplitMetrics(num_classes, bins, labeled=labels is not None)
    decode = space.numpy_decoder(input_space, inputs.shape[1:])
    for start in range(0, len(inputs), batch_size):
        x = decode(inputs[start: start + batch_size])
        y = None if labels is None else torch.as_tensor(labels[start: start + batch_size], dtype=torch.long)
        metrics.update(Outputs(student(torch.from_numpy(x)), torch.from_numpy(np.asarray(teacher(x))).float(), y))
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
    with ray_session(cfg.address, cfg.code_dir) if parallel else contextlib.nullcontext():
        shared = ray.put(weights) if parallel else weights  # one copy for all the tasks
        # Only the held-out split keeps its worst rows: the gallery shows what the student gets wrong
        # on inputs it never trained on.
        return {s: evaluate_split(student, card, shared, paths.split(s), e.batch_size, e.calibration_bins,
                                  e.workers, cfg.task.tolerance, GALLERY_SIZE if s == "heldout" else 0).compute()
                for s in SPLITS}


def regression_report(cfg: Config, paths: rundir.RunPaths, student, card: StudentCard, weights: bytes,
                      teacher_card) -> Report:
    """A surrogate's report: errors on the training and held-out shards, speed, the figures' data."""
    values = _evaluate_splits(cfg, paths, student, card, weights)
    manifests = {s: shards.require_manifest(paths.split(s)) for s in SPLITS}
    names = [p["name"] for p in (card.parameters or [])] or [str(i) for i in range(card.input_shape[0])]
    heatmap = cfg.eval.heatmap or names[:2]
    unknown = [n for n in heatmap if n not in names]
    if unknown:
        raise UserError(f"eval.heatmap names {', '.join(unknown)}, not parameters of this run ({', '.join(names)}).")
    axes = (names.index(heatmap[0]), names.index(heatmap[-1]))
    details = regression.heldout_details(student, paths.split("heldout"), manifests["heldout"], cfg.eval.batch_size,
                                         names, axes) if manifests["heldout"].rows else {}
    speed = {"teacher": regression.teacher_speed(list(manifests.values()))}
    if cfg.eval.latency:
        decode = space.decode_module(card.input_space, card.input_shape, card.parameters)
        speed["student"] = regression.student_speed(student, decode, card.input_shape, cfg.eval.latency_seconds)
    return Report(
        agreement={}, accuracy={}, params={"teacher": teacher_card.params, "student": count_parameters(student)},
        teacher={"kind": teacher_card.kind, "arch": teacher_card.arch, "fingerprint": teacher_card.fingerprint,
                 "version": teacher_card.version},
        student={"arch": card.arch, "kwargs": card.kwargs, "width": card.kwargs.get("width"),
                 "depth": card.kwargs.get("depth"), "epochs": card.epochs},
        rejected_rows={s: sum(r.rejected for r in m.records()) for s, m in manifests.items()},
        first_errors={s: next((r.first_error for r in m.records() if r.first_error), "") for s, m in manifests.items()},
        classes=list(teacher_card.classes), curves=read_curves(paths.student_dir), task=REGRESSION,
        regression={**values, "tolerance": cfg.task.tolerance, "parameters": names, "details": details},
        speed=speed, speedup=regression.speedup(speed["teacher"], speed["student"]) if "student" in speed else None,
        max_rel_error=cfg.eval.max_rel_error, rel_error_quantile=cfg.eval.rel_error_quantile,
        adapt=adapt_rounds(paths),
    )


def adapt_rounds(paths: rundir.RunPaths) -> dict | None:
    """The run's active-distillation rounds (DIR/adapt/rounds.json, written by pipeline/adapt/), if any."""
    path = storage.join(paths.root, "adapt", "rounds.json")
    return storage.read_json(path) if storage.exists(path) else None


def _write_report(paths: rundir.RunPaths, report: Report) -> None:
    from pipeline.evaluate.render import write_report  # here: matplotlib is not needed by every eval worker

    write_report(paths, report)


def run_eval_stage(cfg: Config) -> Report:
    paths = rundir.prepare(cfg)
    add_code_dir(cfg.code_dir)
    teacher, teacher_card = load_teacher(paths)
    student, student_card, weights = load_student_dir(paths.student_dir)
    if student_card.teacher_fingerprint != teacher_card.fingerprint:
        raise UserError(f"{paths.student_card} was trained on a different teacher's labels than {paths.teacher_card}.")
    if student_card.task == REGRESSION:
        report = regression_report(cfg, paths, student, student_card, weights, teacher_card)
        _write_report(paths, report)
        return report
    seed = load_seed(cfg)
    values = _evaluate_splits(cfg, paths, student, student_card, weights)
    gallery = {"split": "heldout", "input_space": student_card.input_space,
               "parameters": [p["name"] for p in student_card.parameters or []],
               "rows": values["heldout"].pop("worst", [])}
    test = evaluate_real(student, teacher, seed.test_images, seed.test_labels, student_card.input_space,
                         teacher_card.num_outputs, cfg.eval.batch_size, cfg.eval.calibration_bins).compute()
    values["test"] = test
    rejected = {split: sum(r.rejected for r in shards.require_manifest(paths.split(split)).records())
                for split in SPLITS}
    lat = None
    if cfg.eval.latency:
        lat = latency.compare(teacher, student, teacher_card.input_shape, cfg.eval.latency_threads,
                              cfg.eval.latency_seconds)
    report = Report(
        **report_sections(values),
        accuracy={"teacher": test.get("teacher_accuracy"), "student": test.get("student_accuracy"),
                  "test_samples": test["samples"]},
        params={"teacher": teacher_card.params, "student": count_parameters(student)},
        teacher={"kind": teacher_card.kind, "arch": teacher_card.arch, "fingerprint": teacher_card.fingerprint,
                 "dataset": teacher_card.dataset},
        student={"arch": student_card.arch, "kwargs": student_card.kwargs, "width": student_card.kwargs.get("width"),
                 "depth": student_card.kwargs.get("depth"), "epochs": student_card.epochs},
        rejected_rows=rejected,
        min_agreement=cfg.eval.min_agreement,
        classes=list(teacher_card.classes),
        latency=lat,
        curves=read_curves(paths.student_dir),
        sweep=storage.read_json(paths.sweep_json) if storage.exists(paths.sweep_json) else None,
        gallery=gallery,
        adapt=adapt_rounds(paths),
    )
    _write_report(paths, report)
    return report
