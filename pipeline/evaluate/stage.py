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
The held-out scan also keeps its worst rows for the report's gallery (pipeline.tasks.worst),
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

from pipeline import shards, track
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.evaluate import latency, regression
from pipeline.evaluate.curves import read_curves
from pipeline.evaluate.report import Report
from pipeline.tasks.worst import GALLERY_SIZE, WorstRows
from pipeline.inputs import space
from pipeline.resolve import add_code_dir
from pipeline.run import rundir, storage
from pipeline.run.ray_session import ray_session
from pipeline.run.rundir import SPLITS
from pipeline.run.lock import locked
from pipeline.tasks import get_task
from pipeline.tasks.metrics import Outputs, SplitMetrics
from pipeline.teach.load import load_teacher
from pipeline.inputs.seeds import load_seed
from pipeline.train.student import StudentCard, load_student_dir, student_from
from teachers import count_parameters



def assign_shards(manifest: shards.Manifest, part: int, parts: int) -> list[int]:
    """The shard indices evaluator `part` of `parts` reads (a Ray task, or a DDP rank): every committed
    shard in exactly one part, whole, so no row is left out or padded in twice."""
    return sorted(manifest.shards)[part::parts]


def new_metrics(manifest: shards.Manifest, bins: int, tolerance: float):
    """Empty metric states of the manifest's task."""
    return get_task(manifest.task).new_metrics(manifest.num_classes, bins, tolerance, manifest.target_shape)


class Scan:
    """What one pass over (part of) a split gives: its metric states and, when asked for, its worst
    rows (pipeline.tasks.worst); parts merge and compute together."""

    def __init__(self, metrics, worst: WorstRows | None = None):
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
    keep = WorstRows(worst) if worst and get_task(manifest.task).keeps_worst_rows() else None
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
            scan.metrics.update(predicted, teacher)
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


def _evaluate_splits(cfg: Config, paths: rundir.RunPaths, student, card: StudentCard, weights: bytes,
                     keep_worst: bool) -> dict:
    e = cfg.eval
    parallel = e.workers > 1
    with ray_session(cfg.address, cfg.code_dir) if parallel else contextlib.nullcontext():
        shared = ray.put(weights) if parallel else weights  # one copy for all the tasks
        # Only the held-out split keeps its worst rows: the gallery shows what the student gets wrong
        # on inputs it never trained on.
        return {s: evaluate_split(student, card, shared, paths.split(s), e.batch_size, e.calibration_bins,
                                  e.workers, cfg.task.tolerance, GALLERY_SIZE if keep_worst and s == "heldout" else 0).compute()
                for s in SPLITS}


class EvalContext:
    """What a task's report section may ask the eval stage for (pipeline/tasks/*_report.py `build`):
    the shards' metrics, the real test split, CPU latency and speed, the held-out figures' data."""

    def __init__(self, cfg: Config, paths: rundir.RunPaths, student, card: StudentCard, weights: bytes, teacher,
                 teacher_card):
        self.cfg, self.paths, self.student, self.card, self.weights = cfg, paths, student, card, weights
        self.teacher, self.teacher_card = teacher, teacher_card

    def evaluate_splits(self, keep_worst: bool) -> dict:
        """Split -> the task's metric values on its shards (the held-out split's worst rows under "worst")."""
        return _evaluate_splits(self.cfg, self.paths, self.student, self.card, self.weights, keep_worst)

    def evaluate_real(self) -> dict:
        """Metrics on the real test split of the seed data, the teacher run here."""
        seed = load_seed(self.cfg)
        return evaluate_real(self.student, self.teacher, seed.test_images, seed.test_labels, self.card.input_space,
                             self.teacher_card.num_outputs, self.cfg.eval.batch_size,
                             self.cfg.eval.calibration_bins).compute()

    def latency(self) -> dict | None:
        """Teacher and student CPU latency at batch 1 and 256, when eval.latency."""
        e = self.cfg.eval
        if not e.latency:
            return None
        return latency.compare(self.teacher, self.student, self.teacher_card.input_shape, e.latency_threads,
                               e.latency_seconds)

    def manifest(self, split: str) -> shards.Manifest:
        return shards.require_manifest(self.paths.split(split))

    def heldout_details(self, names: list[str], axes: tuple[int, int]) -> dict:
        manifest = self.manifest("heldout")
        if not manifest.rows:
            return {}
        return regression.heldout_details(self.student, self.paths.split("heldout"), manifest, self.cfg.eval.batch_size,
                                          names, axes)

    def teacher_speed(self) -> dict:
        return regression.teacher_speed([self.manifest(s) for s in SPLITS])

    def student_speed(self) -> dict | None:
        if not self.cfg.eval.latency:
            return None
        decode = space.decode_module(self.card.input_space, self.card.input_shape, self.card.parameters)
        return regression.student_speed(self.student, decode, self.card.input_shape, self.cfg.eval.latency_seconds)


def adapt_rounds(paths: rundir.RunPaths) -> dict | None:
    """The run's active-distillation rounds (DIR/adapt/rounds.json, written by pipeline/adapt/), if any."""
    path = storage.join(paths.root, "adapt", "rounds.json")
    return storage.read_json(path) if storage.exists(path) else None


def _write_report(paths: rundir.RunPaths, report: Report) -> None:
    from pipeline.evaluate.render import write_report  # here: matplotlib is not needed by every eval worker

    write_report(paths, report)


def track_report(cfg: Config, paths: rundir.RunPaths) -> None:
    """Send the written report to the tracker (--track.to): report.json's figures, the config, the report's
    pages and plots as files, and the student with its curves where they were not sent yet."""
    if not track.enabled(cfg):
        return
    import pyarrow.fs as pafs

    from pipeline.evaluate.render import PLOTS_DIR, REPORT_HTML
    from pipeline.train.stage import student_files

    names = [rundir.CONFIG_NAME, "report.json", "report.md", REPORT_HTML]
    fs, plots = storage.resolve(storage.join(paths.root, PLOTS_DIR))
    if fs.get_file_info(plots).type == pafs.FileType.Directory:
        names += sorted(f"{PLOTS_DIR}/{info.base_name}" for info in fs.get_file_info(pafs.FileSelector(plots))
                        if info.base_name.endswith(".png"))
    files = {name: storage.read_bytes(storage.join(paths.root, name)) for name in names
             if storage.exists(storage.join(paths.root, name))}
    track.log_evaluation(cfg, storage.read_json(paths.report_json), files, storage.join(paths.student_dir, "logs"),
                         student_files(paths.student_dir))


@locked
def run_eval_stage(cfg: Config) -> Report:
    paths = rundir.prepare(cfg)
    add_code_dir(cfg.code_dir)
    cfg = track.bind(cfg)  # the tracker's run (--track.to), opened before the evaluation's work
    teacher, teacher_card = load_teacher(paths)
    student, student_card, weights = load_student_dir(paths.student_dir)
    if student_card.teacher_fingerprint != teacher_card.fingerprint:
        raise UserError(f"{paths.student_card} was trained on a different teacher's labels than {paths.teacher_card}.")
    task = get_task(student_card.task)
    ctx = EvalContext(cfg, paths, student, student_card, weights, teacher, teacher_card)
    manifests = {s: ctx.manifest(s) for s in SPLITS}
    report = Report(
        params={"teacher": teacher_card.params, "student": count_parameters(student)},
        teacher={"kind": teacher_card.kind, "arch": teacher_card.arch, "fingerprint": teacher_card.fingerprint,
                 "dataset": teacher_card.dataset, "version": teacher_card.version},
        student={"arch": student_card.arch, "kwargs": student_card.kwargs, "width": student_card.kwargs.get("width"),
                 "depth": student_card.kwargs.get("depth"), "epochs": student_card.epochs},
        rejected_rows={s: sum(r.rejected for r in m.records()) for s, m in manifests.items()},
        first_errors={s: next((r.first_error for r in m.records() if r.first_error), "") for s, m in manifests.items()},
        curves=read_curves(paths.student_dir),
        sweep=storage.read_json(paths.sweep_json) if storage.exists(paths.sweep_json) else None,
        task=task.name, input_space=student_card.input_space,
        min_agreement=cfg.eval.min_agreement, max_rel_error=cfg.eval.max_rel_error,
        rel_error_quantile=cfg.eval.rel_error_quantile,
        adapt=adapt_rounds(paths),
        **task.build_report(ctx),
    )
    _write_report(paths, report)
    track_report(cfg, paths)
    return report
