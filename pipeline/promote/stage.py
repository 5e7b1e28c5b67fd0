"""The promote and rollback stages: typed config in, typed result out.

`run_promote` compares a finished run's student (the challenger) with the registry's current one (the
champion) on the challenger's held-out shards, and makes it current when it passes the gate and is
no worse than the champion by more than the tolerance. A refusal is a result (`promoted` False, with
the reason), not an exception; a user's mistake (no student in the run, a damaged registry, a champion
that takes other inputs, a registry in use) is a UserError, raised before anything is written.
`run_rollback` makes the version current again that the current one replaced.

These are the file registry's; an `mlflow:NAME` registry (pipeline/promote/mlflow_registry.py) judges
with the same `load_challenger` and `judge`, so both registries promote under the same rules.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

import torch

from pipeline import shards
from pipeline.errors import ConfigError, UserError
from pipeline.promote.compare import (
    Score,
    Verdict,
    check_comparable,
    decide,
    figure_name,
    heldout_manifest,
    score,
)
from pipeline.promote.registry import VERSIONS, Registry, now
from pipeline.resolve import add_code_dir
from pipeline.run import rundir, storage
from pipeline.run.rundir import RunPaths
from pipeline.train.export import onnx_path
from pipeline.train.student import StudentCard, load_student_dir


MLFLOW = "mlflow:"  # --registry mlflow:NAME: a registered model in MLflow (pipeline/promote/mlflow_registry.py)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_registry(registry: str) -> None:
    """An `mlflow:` registry must name a registered model, in characters every MLflow store takes."""
    if not registry.startswith(MLFLOW):
        return
    name = registry[len(MLFLOW):]
    if not name:
        raise ConfigError("--registry mlflow: names no registered model; write mlflow:NAME, "
                          "e.g. mlflow:digits-student.")
    if not MODEL_NAME.match(name):
        raise ConfigError(f"--registry mlflow:{name}: a registered model's name here is letters, digits, '.', '_' "
                          "and '-', starting with a letter or digit.")


@dataclass
class PromoteConfig:
    """`python -m pipeline promote RUN --registry REG`."""

    run: str
    """The run whose student is the challenger: its output directory (a local path or a URI)."""
    registry: str
    """Where served students live: a local path or a pyarrow filesystem URI (file://, s3://, gs://), or
    mlflow:NAME, the registered model NAME in an MLflow store (its `champion` alias is the one served)."""
    tolerance: float = 0.001
    """How much worse than the champion the challenger may be, in the compared figure's units: held-out
    top-1 agreement (a fraction) for classification, held-out relative L2 error for regression. Small and
    above 0, so a retrained student that merely ties the champion is still promoted."""
    min_agreement: float | None = None
    """The gate (classification): refuse a challenger whose held-out top-1 agreement is below this."""
    max_rel_error: float | None = None
    """The gate (regression): refuse a challenger whose held-out relative L2 error at rel_error_quantile is above this."""
    rel_error_quantile: Literal["median", "p95", "p99", "max"] = "p95"
    """Regression: which quantile of the per-sample relative L2 error is compared and gated."""
    batch_size: int = 4096
    """Rows per forward pass while scoring both students."""
    code_dir: str | None = None
    """A directory of your own modules, when a student's architecture is yours (an import path)."""
    mlflow_uri: str | None = None
    """The MLflow store of an mlflow:NAME registry (e.g. sqlite:///mlflow.db). None: MLFLOW_TRACKING_URI."""

    def __post_init__(self) -> None:
        check_registry(self.registry)
        if self.tolerance < 0:
            raise ConfigError(f"--tolerance must not be negative, got {self.tolerance}.")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"--min-agreement must be in [0, 1], got {self.min_agreement}.")
        if self.max_rel_error is not None and self.max_rel_error < 0:
            raise ConfigError(f"--max-rel-error must not be negative, got {self.max_rel_error}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")


@dataclass
class PromoteResult:
    action: Literal["promoted", "refused", "current"]  # current: the run's student is already the one served
    version: str | None  # current after the call (the new version when promoted; None: registry empty)
    champion: str | None  # the version the challenger was compared with (None: an empty registry)
    reason: str  # one sentence: what was compared, or why the challenger was refused
    challenger: dict  # the challenger's held-out metrics on the compared inputs
    champion_metrics: dict | None = None  # the champion's, on the same inputs

    @property
    def promoted(self) -> bool:
        return self.action != "refused"


@dataclass
class RollbackConfig:
    """`python -m pipeline rollback --registry REG`."""

    registry: str
    """The registry: a local path or a pyarrow filesystem URI, or mlflow:NAME."""
    mlflow_uri: str | None = None
    """The MLflow store of an mlflow:NAME registry. None: MLFLOW_TRACKING_URI."""

    def __post_init__(self) -> None:
        check_registry(self.registry)


@dataclass
class RollbackResult:
    version: str  # current now
    previous: str  # current before the rollback


def _version_files(run: RunPaths, weights: bytes) -> dict[str, bytes]:
    """What a version holds: the student as the run wrote it, the teacher's card, the run's report."""
    files = {f"student/{rundir.STUDENT_WEIGHTS}": weights}
    for name, path in ((f"student/{rundir.STUDENT_CARD}", run.student_card),
                       ("student/student.onnx", onnx_path(run.student_dir)),
                       ("teacher.json", run.teacher_card), ("report.json", run.report_json)):
        if storage.exists(path):
            files[name] = storage.read_bytes(path)
    return files


@dataclass
class Challenger:
    """A finished run's student, and the held-out shards that both students are scored on."""

    run: RunPaths
    student: torch.nn.Module
    card: StudentCard
    weights: bytes
    digest: str  # sha256 of the weights: the student's identity in a registry
    manifest: shards.Manifest
    split_dir: str


def load_challenger(cfg: PromoteConfig) -> Challenger:
    add_code_dir(cfg.code_dir)
    run = RunPaths(cfg.run)
    if not storage.exists(run.root):
        raise UserError(f"{cfg.run} does not exist; expected the output directory of a finished run.")
    student, card, weights = load_student_dir(run.student_dir)
    manifest = heldout_manifest(run, card)
    return Challenger(run, student, card, weights, hashlib.sha256(weights).hexdigest(), manifest, run.split("heldout"))


def judge(cfg: PromoteConfig, ch: Challenger, champion_dir: str | None,
          name: str | None) -> tuple[Verdict, Score, Score | None]:
    """The promotion rules, whichever registry holds the champion: the champion (the student in
    `champion_dir`, called `name`; None: an empty registry) and the challenger scored on the same
    held-out inputs, then the gate and the tolerance (pipeline.promote.compare.decide)."""
    champion = None
    if champion_dir is not None:
        champion_student, champion_card, _ = load_student_dir(champion_dir)
        check_comparable(champion_card, ch.manifest, name, ch.split_dir)
        champion = score(champion_student, champion_card, ch.split_dir, ch.manifest, cfg.batch_size,
                         cfg.rel_error_quantile)
    challenger = score(ch.student, ch.card, ch.split_dir, ch.manifest, cfg.batch_size, cfg.rel_error_quantile)
    verdict = decide(ch.manifest.task, challenger, champion, name, cfg.tolerance, cfg.min_agreement,
                     cfg.max_rel_error, cfg.rel_error_quantile)
    return verdict, challenger, champion


def _file_registry(registry: str) -> Registry:
    if registry.startswith(MLFLOW):
        raise UserError(f"{registry} is an MLflow registry: use pipeline.promote.mlflow_registry for it.")
    return Registry(registry)


def run_promote(cfg: PromoteConfig) -> PromoteResult:
    _file_registry(cfg.registry)
    ch = load_challenger(cfg)
    run, card, manifest, split_dir, digest = ch.run, ch.card, ch.manifest, ch.split_dir, ch.digest
    reg = Registry(cfg.registry)
    with reg.lock():
        reg.recover()
        name = reg.current()
        record = reg.promotion_of(name) if name else None
        if name and record and record.get("student_sha256") == digest:
            return PromoteResult("current", name, name, f"{run.root}'s student is already {name}, the current "
                                 f"version in {reg.root}", {})
        verdict, challenger, champion = judge(cfg, ch, reg.student_dir(name) if name else None, name)
        champion_metrics = champion.metrics if champion else None
        if not verdict.promote:
            return PromoteResult("refused", name, name, verdict.reason, challenger.metrics, champion_metrics)
        version = reg.next_version()
        files = _version_files(run, ch.weights)
        entry = {
            "version": version, "action": "promote", "previous": name, "time": now(), "run": run.root,
            "task": manifest.task, "teacher_fingerprint": manifest.teacher_fingerprint, "student_sha256": digest,
            "student": {"arch": card.arch, "kwargs": card.kwargs, "params": card.params, "epochs": card.epochs},
            "compared": {"figure": figure_name(manifest.task, cfg.rel_error_quantile), "inputs": split_dir,
                         "challenger": challenger.metrics, "champion": champion_metrics, "tolerance": cfg.tolerance},
            "gate": {"min_agreement": cfg.min_agreement, "max_rel_error": cfg.max_rel_error},
            "report": f"{VERSIONS}/{version}/report.json" if "report.json" in files else None,
        }
        reg.write_version(version, files, entry)
        reg.switch(entry)
        return PromoteResult("promoted", version, name, verdict.reason, challenger.metrics, champion_metrics)


def run_rollback(cfg: RollbackConfig) -> RollbackResult:
    reg = _file_registry(cfg.registry)
    if not storage.exists(reg.root):
        raise UserError(f"{cfg.registry} does not exist; expected a registry that `promote` wrote into.")
    with reg.lock():
        reg.recover()
        current = reg.current()
        if current is None:
            raise UserError(f"{reg.root} holds no promoted version: there is nothing to roll back.")
        promotion = reg.promotion_of(current)
        previous = (promotion or {}).get("previous")
        if previous is None:
            raise UserError(f"{current} is the first version promoted into {reg.root}: "
                            "there is no earlier version to roll back to.")
        if not storage.exists(reg.version_dir(previous)):
            raise UserError(f"{reg.version_dir(previous)} is missing: the registry is damaged.")
        reg.switch({"version": previous, "action": "rollback", "previous": current, "time": now()})
        return RollbackResult(previous, current)
