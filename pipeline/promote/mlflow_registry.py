"""A registered model in MLflow as the registry of served students (`--registry mlflow:NAME`), beside
the file registry (pipeline/promote/registry.py), under the same rules and exit codes.

MLflow's registry marks versions with aliases, not stages: the version `champion` points to is the one
served (a server loads `models:/NAME@champion`), `challenger` the last one refused.

    promote RUN   RUN's student (the challenger) is compared with the champion on RUN's held-out shards
                  (pipeline.promote.stage.judge, as for the file registry). Either way it becomes a
                  version of NAME: the student as an MLflow model (ONNX flavour, with its signature, its
                  weights and card as extra files), logged in RUN's MLflow run (the tracker's, found by
                  its tags; started here for a run that was never tracked). A version registered
                  before for the same weights is reused. Promoted: the version records the champion it
                  replaces, then `champion` moves to it. Refused: `challenger` moves to it, with the
                  reason as a tag, and `champion` stays where it was (exit 3).
    rollback      `champion` moves back to the version the current champion replaced.

Moving an alias is one call, atomic in the store, and it comes last: a promotion killed before it
leaves at most a version without an alias, which the next promotion of the same student reuses.
MLflow has no lock: never run two promotions into one NAME at once (the nightly CronJob runs one at a
time).
"""

from __future__ import annotations

import os
import tempfile

from pipeline.config import TrackConfig, fingerprint
from pipeline.config_file import read_mapping
from pipeline.errors import UserError
from pipeline.promote.compare import figure_name
from pipeline.promote.registry import now
from pipeline.promote.stage import (
    MLFLOW,
    Challenger,
    PromoteConfig,
    PromoteResult,
    RollbackConfig,
    RollbackResult,
    judge,
    load_challenger,
)
from pipeline.run import rundir
from pipeline.track.figures import config_params
from pipeline.track.mlflow_store import open_client, require_mlflow, resolve_uri, store_errors
from pipeline.track.mlflow_tracker import STUDENT_SHA, MlflowTracker
from pipeline.train.stage import student_files

CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS = "distillery.previous_champion"  # on a promoted version: the champion it replaced
REFUSED = "distillery.refused"  # on a refused version: why
RUN = "distillery.run"  # the run directory a version's student came from
PROMOTED, ROLLED_BACK = "distillery.promoted_at", "distillery.rolled_back_at"
EXTRA = "extra_files"  # where MLflow keeps a model's extra files: the student's weights and card
DESCRIPTION = ("Students distilled by Distillery. Alias champion: the version served (models:/NAME@champion); "
               "challenger: the last one refused.")


def is_mlflow(registry: str) -> bool:
    return registry.startswith(MLFLOW)


def model_name(registry: str) -> str:
    return registry[len(MLFLOW):]


def _open(cfg) -> tuple[object, str]:
    uri = resolve_uri(cfg.mlflow_uri, f"--registry {cfg.registry} (--mlflow-uri)")
    client = open_client(uri)
    require_mlflow().set_tracking_uri(uri)  # MLflow resolves a version's models:/ source through the fluent store
    return client, uri


def _registered(client, name: str):
    """The registered model `name`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _download_student(uri: str, name: str, version: str, into: str) -> str:
    """The student folder (weights and card) of version `version`, downloaded into `into`."""
    mlflow = require_mlflow()
    mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=into, tracking_uri=uri)
    folder = os.path.join(into, EXTRA)
    if not os.path.isfile(os.path.join(folder, rundir.STUDENT_CARD)):
        raise UserError(f"version {version} of {name} holds no student card ({EXTRA}/{rundir.STUDENT_CARD}): it was "
                        "not registered by `promote`, so it cannot be compared; promote into another registered model.")
    return folder


def _register(client, uri: str, name: str, ch: Challenger, tags: dict[str, str]):
    """The version of `name` holding the challenger: the one registered before for its weights, or a
    new one, from its model in the run's MLflow run."""
    if _registered(client, name) is None:
        client.create_registered_model(name, description=DESCRIPTION)
    for version in client.search_model_versions(f"name='{name}'"):
        if version.tags.get(STUDENT_SHA) == ch.digest:
            return version
    fields = read_mapping(ch.run.config)
    tracked = MlflowTracker.of_run_dir(client, uri, TrackConfig().experiment, ch.run.root, fingerprint(fields),
                                       ch.run.root.rstrip("/").rsplit("/", 1)[-1])
    tracked.log_params(config_params(fields, ch.run.root))
    model_uri = tracked.log_student(student_files(ch.run.student_dir))
    if not model_uri:
        raise UserError(f"{ch.run.student_dir} holds no student.onnx (its export failed, see "
                        "student.onnx.failed.json): an MLflow registry serves the ONNX model, so this student "
                        "cannot be registered.")
    return client.create_model_version(name, model_uri, run_id=tracked.run_id,
                                       tags={STUDENT_SHA: ch.digest, RUN: ch.run.root, **tags})


def run_promote(cfg: PromoteConfig) -> PromoteResult:
    ch = load_challenger(cfg)  # a run that is not there is said before the store is touched
    client, uri = _open(cfg)
    name = model_name(cfg.registry)
    with store_errors(uri):
        model = _registered(client, name)
        current = (model.aliases or {}).get(CHAMPION) if model else None
        current = str(current) if current is not None else None
        label = f"version {current}" if current else None
        if current and client.get_model_version(name, current).tags.get(STUDENT_SHA) == ch.digest:
            return PromoteResult("current", current, current, f"{ch.run.root}'s student is already version {current}, "
                                 f"the champion of {name}", {})
        with tempfile.TemporaryDirectory() as tmp:
            champion_dir = _download_student(uri, name, current, tmp) if current else None
            verdict, challenger, champion = judge(cfg, ch, champion_dir, label)
        champion_metrics = champion.metrics if champion else None
        figure = figure_name(ch.manifest.task, cfg.rel_error_quantile)
        tags = {f"distillery.heldout.{k}": str(v) for k, v in challenger.metrics.items()}
        registered = _register(client, uri, name, ch, {"distillery.figure": figure, **tags})
        version = str(registered.version)
        if not verdict.promote:
            reason = verdict.reason.replace("the registry stays empty", f"{name} still has no champion")
            client.set_model_version_tag(name, version, REFUSED, reason)
            client.set_registered_model_alias(name, CHALLENGER, version)
            reason = f"{reason.rstrip('.')} (the challenger is version {version} of {name}, alias {CHALLENGER})."
            return PromoteResult("refused", current, current, reason, challenger.metrics, champion_metrics)
        client.set_model_version_tag(name, version, PREVIOUS, current or "")
        client.set_model_version_tag(name, version, PROMOTED, now())
        if REFUSED in registered.tags:  # refused once, against another champion or under another bar
            client.delete_model_version_tag(name, version, REFUSED)
        client.set_registered_model_alias(name, CHAMPION, version)  # the switch
        if model is not None and str((model.aliases or {}).get(CHALLENGER)) == version:
            client.delete_registered_model_alias(name, CHALLENGER)  # no longer a refused one
        return PromoteResult("promoted", version, current, verdict.reason, challenger.metrics, champion_metrics)


def run_rollback(cfg: RollbackConfig) -> RollbackResult:
    client, uri = _open(cfg)
    name = model_name(cfg.registry)
    with store_errors(uri):
        model = _registered(client, name)
        current = (model.aliases or {}).get(CHAMPION) if model else None
        if current is None:
            raise UserError(f"{name} has no champion in the MLflow store {uri}: there is nothing to roll back.")
        current = str(current)
        previous = client.get_model_version(name, current).tags.get(PREVIOUS)
        if not previous:
            raise UserError(f"version {current} is the first champion of {name}: "
                            "there is no earlier version to roll back to.")
        try:
            client.get_model_version(name, previous)
        except Exception as exc:
            raise UserError(f"version {previous} of {name}, which version {current} replaced, "
                            f"is gone from {uri}.") from exc
        client.set_model_version_tag(name, current, ROLLED_BACK, now())
        client.set_registered_model_alias(name, CHAMPION, previous)
        return RollbackResult(previous, current)


def serving_uri(registry: str) -> str:
    """What a server loads: the champion of the registered model."""
    return f"models:/{model_name(registry)}@{CHAMPION}"
