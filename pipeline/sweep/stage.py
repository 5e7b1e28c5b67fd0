"""The capacity sweep: students of several sizes trained on the run's shards, in parallel Ray tasks,
compared by agreement, parameters and CPU latency, to find the smallest student that copies the
teacher well enough (the capacity at which "useful overfitting" reaches the target).

Each trial is `pipeline.train.fit_student` with `student` replaced, in its own folder
DIR/sweep/<arch>-w<width>-d<depth>/ (weights, card, checkpoints, training curves, train.log). A
finished trial (its card written) is reused, so an interrupted sweep continues where it stopped and
a wider sweep trains only the new sizes. Latency is measured here, after every trial has finished,
one model at a time: timing next to running trainings would measure the contention, not the model.

Output: DIR/sweep/sweep.json, DIR/sweep/sweep.png, and (when the run has a report) the report
redrawn with a sweep section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from dataclasses import dataclass

import ray
import torch

from pipeline.evaluate import latency
from pipeline.run import rundir, storage
from pipeline import shards
from pipeline.config import Config, StudentConfig
from pipeline.errors import UserError
from pipeline.evaluate.stage import evaluate_split
from pipeline.resolve import accepts, add_code_dir, is_import_path, resolve_factory
from pipeline.run.ray_session import ray_session
from pipeline.evaluate.render import write_report
from pipeline.evaluate.report import load_report
from pipeline.run.rundir import SPLITS, SWEEP_DIR
from pipeline.run.lock import locked
from pipeline.tasks import Task, get_task
from pipeline.teach.load import load_teacher
from pipeline.train.stage import fit_student
from pipeline.train.student import load_student_dir, student_card_path
from students import STUDENTS

DEFAULT_TARGET = 0.99


@dataclass(frozen=True)
class Trial:
    arch: str
    width: int
    depth: int

    @property
    def name(self) -> str:
        # An import path becomes a folder name: "mypkg.models:build" -> "mypkg.models-build".
        return f"{self.arch.replace(':', '-')}-w{self.width}-d{self.depth}"

    def student(self, base: StudentConfig) -> StudentConfig:
        """The trial's student config: a built-in gets width and depth; a factory by import path gets
        them as keyword args (it must accept them)."""
        if is_import_path(self.arch):
            return dataclasses.replace(base, arch=self.arch, kwargs={**base.kwargs, "width": self.width,
                                                                      "depth": self.depth})
        return dataclasses.replace(base, arch=self.arch, width=self.width, depth=self.depth)


def plan(cfg: Config) -> list[Trial]:
    s = cfg.sweep
    arch = s.arch or cfg.student.arch
    depths = s.depths or [cfg.student.depth]
    return [Trial(arch, w, d) for d in sorted(set(depths)) for w in sorted(set(s.widths))]


def target_of(cfg: Config, task: Task | None = None) -> float:
    """The bar a trial must reach, on the task's held-out headline figure: for classification
    sweep.target_agreement, else eval.min_agreement, else 0.99; for regression eval.max_rel_error
    (`--max-rel-error`), else task.tolerance."""
    task = task or get_task(cfg.task.kind)
    if task.bar_option() == "--max-rel-error":
        return cfg.eval.max_rel_error if cfg.eval.max_rel_error is not None else cfg.task.tolerance
    for value in (cfg.sweep.target_agreement, cfg.eval.min_agreement):
        if value is not None:
            return value
    return DEFAULT_TARGET


def smallest_reaching(trials: list[dict], target: float, task: Task | None = None, quantile: str = "p95") -> dict | None:
    """The trial with the fewest parameters whose held-out headline figure (classification: top-1
    agreement; regression: relative error at `quantile`) is on the right side of `target`."""
    task = task or get_task("classification")
    figure, section = task.headline(quantile), task.render()
    values = [(t, section.trial_value(t, quantile)) for t in trials]
    reaching = [t for t, v in values if v is not None and figure.better_or_equal(v, target)]
    return min(reaching, key=lambda t: (t["params"], t["name"]), default=None)


@contextlib.contextmanager
def _quiet(log: io.StringIO):
    """Send a trial's progress bars, warnings and Lightning's info lines to its log, not the console
    the trials share."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def run_trial(cfg: Config, root: str, trial: Trial, threads: int) -> dict:
    """Train (or reuse) one student of the sweep and measure its agreement on both shard splits."""
    torch.set_num_threads(threads)
    paths = rundir.RunPaths(root)
    student_dir = storage.join(paths.sweep_dir, trial.name)
    trained = not storage.exists(student_card_path(student_dir))
    if trained:
        trial_cfg = dataclasses.replace(
            cfg, student=trial.student(cfg.student),
            # One process per trial: parallelism comes from running trials side by side.
            train=dataclasses.replace(cfg.train, devices=1, loader_workers=0),
        )
        log = io.StringIO()
        try:
            with _quiet(log):
                fit_student(trial_cfg, paths, student_dir)
        finally:
            storage.write_bytes_atomic(storage.join(student_dir, "train.log"), log.getvalue().encode())
    student, card, weights = load_student_dir(student_dir)
    values = {s: evaluate_split(student, card, weights, paths.split(s), cfg.eval.batch_size,
                                cfg.eval.calibration_bins, tolerance=cfg.task.tolerance).compute() for s in SPLITS}
    return {
        "name": trial.name, "arch": card.arch, "width": trial.width, "depth": trial.depth, "params": card.params,
        "epochs": card.epochs, "dir": f"{SWEEP_DIR}/{trial.name}", "trained": trained,
        **get_task(card.task).render().trial_figures(values),
    }


_run_trial_task = ray.remote(run_trial)


def _check_ready(cfg: Config, paths: rundir.RunPaths):
    """Refuse before starting any trial, rather than in every one of them; return the teacher and its card."""
    add_code_dir(cfg.code_dir)
    teacher = load_teacher(paths)
    load_report(paths)  # the sweep ends by adding itself to the report: a broken one stops it now, not then
    shards.require_manifest(paths.split("train"))
    heldout = shards.require_manifest(paths.split("heldout"))
    if heldout.rows == 0:
        raise UserError(f"{paths.split('heldout')} holds no rows: the sweep compares students on held-out shards "
                        "(start a run with data.heldout_shards of at least 1).")
    arch = cfg.sweep.arch or cfg.student.arch
    factory = resolve_factory(arch, STUDENTS, "sweep.arch" if cfg.sweep.arch else "student.arch")
    if is_import_path(arch) and not (accepts(factory, "width") and accepts(factory, "depth")):
        raise UserError(f"the sweep builds students of several sizes, so {arch!r} must take keyword arguments "
                        "width and depth.")
    return teacher


def _run_trials(cfg: Config, trials: list[Trial], on_done) -> list[dict]:
    s = cfg.sweep
    task = _run_trial_task.options(num_cpus=s.cpus_per_trial, num_gpus=s.gpus_per_trial, max_retries=0)
    pending = {task.remote(cfg, rundir.RunPaths(cfg.out).root, t, s.cpus_per_trial): t for t in trials}
    results = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        trial = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), UserError) else None
            if cause is not None:
                raise UserError(f"sweep trial {trial.name}: {cause}") from exc
            raise
        results.append(result)
        on_done(result, len(results), len(trials))
    return results


@locked
def run_sweep(cfg: Config, on_done=lambda result, done, total: None) -> dict:
    paths = rundir.prepare(cfg)
    teacher, card = _check_ready(cfg, paths)
    trials = plan(cfg)
    task = get_task(cfg.task.kind)
    with ray_session(cfg.address, cfg.code_dir):
        results = _run_trials(cfg, trials, on_done)
    e = cfg.eval
    for result in results:
        student, _, _ = load_student_dir(storage.join(paths.root, result["dir"]))
        result["latency"] = latency.model_latency(student, card.input_shape, e.latency_threads, e.latency_seconds)
    results.sort(key=lambda t: (t["params"], t["name"]))
    quantile = cfg.eval.rel_error_quantile
    target = target_of(cfg, task)
    smallest = smallest_reaching(results, target, task, quantile)
    sweep = {
        "target": target, "split": "heldout", "trials": results, "smallest": smallest, "task": task.name,
        "figure": task.headline(quantile).name, "quantile": quantile,
        # A network teacher's latency is drawn beside the students'; a simulator's speed is measured
        # while it labels (the report's speed), not here, where one batch may take minutes.
        "teacher": {"params": card.params,
                    "latency": latency.model_latency(teacher, card.input_shape, e.latency_threads, e.latency_seconds)
                    if task.compares_teacher_latency else None},
        "latency_threads": e.latency_threads,
    }
    storage.write_json_atomic(paths.sweep_json, sweep)
    figure = task.render().sweep_figure(sweep)
    storage.write_bytes_atomic(storage.join(paths.sweep_dir, "sweep.png"), figure)
    report = load_report(paths)
    if report is not None:
        report.sweep = sweep
        write_report(paths, report)
    return sweep
