"""Experiment tracking (`--track.to`): a run's config, training curves, report and student, sent where a
team already follows its runs: an MLflow store (pipeline/track/mlflow_tracker.py) or a TensorBoard
directory (tensorboard_tracker.py).

What the stages call; each is a no-op with tracking off (track.to none, the default), and then nothing
of mlflow or tensorboard is imported:

    bind(cfg, child=None)   open the output directory's run in the tracker now (an unreachable store stops a run before
                            its work) and return cfg carrying its id, which DDP ranks and Ray Train workers
                            read from cfg; with `child`, a child run (an active round's student)
    lightning_loggers(cfg)  Lightning's own logger for the bound run: the training curves, live, from rank 0
    log_training(...)       after the train stage: curves (replayed from the CSV logs when the student was
                            trained without the tracker) and the student as a model
    log_evaluation(...)     after the eval stage: report.json's figures, the report and plots as files
    log_rounds(cfg, rounds) active rounds as series over rounds

A run is the tracker's run of its output directory and config fingerprint, whichever stage or process
opens it: a finished run rerun with tracking added sends what it has, and reruns send nothing twice.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

from pipeline.config import Config, fingerprint, result_fields
from pipeline.errors import UserError
from pipeline.run import storage
from pipeline.track.figures import config_params, logged_curves, report_figures, round_series
from pipeline.track.tracker import StudentFiles, Tracker

__all__ = ["StudentFiles", "Tracker", "bind", "enabled", "lightning_loggers", "log_evaluation", "log_rounds",
           "log_training", "tracker"]

MLFLOW, TENSORBOARD = "mlflow", "tensorboard"


def enabled(cfg: Config) -> bool:
    return cfg.track.to != "none"


def _location(cfg: Config) -> tuple[str, str]:
    """(tracker, where): an MLflow store's URI, or a local TensorBoard directory made absolute."""
    kind, _, where = cfg.track.to.partition(":")
    if kind == MLFLOW:
        from pipeline.track.mlflow_store import resolve_uri

        return kind, resolve_uri(where, "--track.to mlflow")
    if where:
        return kind, os.path.abspath(where)
    local = storage.local_path(cfg.out)
    if local is None:
        raise UserError(f"--track.to tensorboard writes into the run's directory, and {cfg.out} is not local: "
                        "give a local directory, --track.to tensorboard:DIR.")
    return kind, os.path.join(local, TENSORBOARD)


@functools.lru_cache(maxsize=8)
def _open(kind: str, where: str, experiment: str, name: str, run_id: str | None, out: str, config: str) -> Tracker:
    """The tracker's run of the output directory `out` and the config fingerprint `config`."""
    if kind == MLFLOW:
        from pipeline.track.mlflow_tracker import MlflowTracker

        return MlflowTracker.open(where, experiment, out, config, name, run_id)
    from pipeline.track.tensorboard_tracker import TensorBoardTracker

    return TensorBoardTracker.open(where, out, config, name, run_id)


def tracker(cfg: Config) -> Tracker | None:
    """The output directory's run in the tracker (opened once per process), its config sent; None with
    tracking off."""
    if not enabled(cfg):
        return None
    kind, where = _location(cfg)
    out = storage.absolute(cfg.out)
    fields = result_fields(cfg)
    name = cfg.track.run_name or out.rstrip("/").rsplit("/", 1)[-1]
    t = _open(kind, where, cfg.track.experiment, name, cfg.track.run_id, out, fingerprint(fields))
    if not t.params_sent:
        with t.errors():
            t.log_params(config_params(fields, out))
        t.params_sent = True
    return t


def bind(cfg: Config, child: str | None = None) -> Config:
    """cfg with the tracker's run (or its child run `child`) in cfg.track: to with its location
    resolved, run_id set. Unchanged with tracking off."""
    t = tracker(cfg)
    if t is None:
        return cfg
    if child:
        with t.errors():
            t = t.child(child)
    return dataclasses.replace(cfg, track=dataclasses.replace(cfg.track, to=t.to, run_id=t.run_id))


def lightning_loggers(cfg: Config) -> list:
    """[Lightning's MLFlowLogger or TensorBoardLogger for the bound run], or [] (tracking off, or a cfg
    that was not bound: a sweep's trials are not sent)."""
    if not enabled(cfg) or cfg.track.run_id is None:
        return []
    if cfg.track.to.startswith(MLFLOW):
        from pipeline.track.mlflow_tracker import lightning_logger
    else:
        from pipeline.track.tensorboard_tracker import lightning_logger
    return [lightning_logger(cfg.track.to, cfg.track.run_id)]


def _curves(t: Tracker, logs_dir: str, student: StudentFiles, trained: bool) -> None:
    """Mark the curves of these weights as sent: by Lightning's logger while they trained, or now, from
    the CSV logs, for a student trained without the tracker."""
    if t.marker("curves") == student.sha256:
        return
    if not trained:
        t.log_series(logged_curves(logs_dir))
    t.set_marker("curves", student.sha256)


def log_training(cfg: Config, logs_dir: str, student: StudentFiles, trained: bool) -> None:
    """After training (`trained`: here, with the bound run's logger) or reusing a student."""
    t = tracker(cfg)
    if t is None:
        return
    with t.errors():
        _curves(t, logs_dir, student, trained)
        t.log_student(student)


def _rounds(t: Tracker, rounds: list[dict]) -> None:
    sent = int(t.marker("rounds") or 0)
    todo = [entry for entry in rounds if int(entry["round"]) >= sent]
    if todo:
        t.log_series(round_series(todo))
        t.set_marker("rounds", str(max(int(entry["round"]) for entry in todo) + 1))


def log_rounds(cfg: Config, rounds: list[dict]) -> None:
    """Active rounds (rounds.json's entries) not sent yet, as `adapt/...` series with the round as step."""
    t = tracker(cfg)
    if t is not None:
        with t.errors():
            _rounds(t, rounds)


def log_evaluation(cfg: Config, report: dict, files: dict[str, bytes], logs_dir: str,
                   student: StudentFiles | None) -> None:
    """After the eval stage (or a finished run's rerun): the student and its curves if not sent yet,
    report.json's figures, the rounds, and the files (report.json, report.html, plots/*.png, ...)."""
    t = tracker(cfg)
    if t is None:
        return
    with t.errors():
        if student is not None:
            _curves(t, logs_dir, student, trained=False)
            t.log_student(student)
        _rounds(t, (report.get("adapt") or {}).get("rounds") or [])
        digest = hashlib.sha256(files.get("report.json", b"")).hexdigest()
        if t.marker("report") != digest:
            t.log_metrics(report_figures(report))
            t.log_files(files)
            t.set_marker("report", digest)
        t.finish()
