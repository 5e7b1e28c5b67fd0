"""Opening an MLflow store: for the tracker (pipeline/track/mlflow_tracker.py) and for the registry of
served students (pipeline/promote/mlflow_registry.py).

Every way of failing to open one is the user's to fix, so each is one sentence: MLflow not installed,
no store named, a store that cannot be reached, an experiment deleted there. mlflow is imported here,
inside functions, so a run without tracking never imports it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ConfigError, UserError

ENV = "MLFLOW_TRACKING_URI"
INSTALL = "pip install 'distillery[track]'"
ARTIFACTS = "mlartifacts"  # beside a SQLite store's file: where the MLflow server keeps them by default


def require_mlflow():
    """The mlflow module, or the sentence saying how to install it. MLflow's log records go where the
    pipeline's go (one line each, JSON with --log-format json), its notes on creating tables left out."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # no handler of its own, printing past ours
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars belong to the pipeline
    try:
        import mlflow
    except ImportError as exc:
        raise UserError(f"MLflow is not installed here ({exc}); install the tracking extra: {INSTALL}.") from exc
    for name in ("mlflow", "alembic"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


def resolve_uri(uri: str | None, what: str) -> str:
    """The store's URI, from `uri` or else MLFLOW_TRACKING_URI; a relative SQLite file made absolute, so
    that processes started elsewhere (Ray workers) open the same file. `what` names the option."""
    uri = uri or os.environ.get(ENV)
    if not uri:
        raise ConfigError(f"{what} names no MLflow store: give its URI (e.g. sqlite:///mlflow.db) or set {ENV}.")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    return uri


def sqlite_file(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def open_client(uri: str):
    """An MlflowClient on a store that answers (checked with one cheap request)."""
    require_mlflow()
    from mlflow import MlflowClient

    db = sqlite_file(uri)
    if db is not None and not db.parent.is_dir():
        raise UserError(f"the MLflow store {uri} cannot be opened: directory {db.parent} does not exist.")
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, SQLAlchemy's, requests' and OSError's wordings
        raise UserError(f"the MLflow store {uri} cannot be reached: {_first_line(exc)}") from exc
    return client


def experiment_id(client, name: str, uri: str) -> str:
    """The experiment `name`, created when missing. A new experiment in a SQLite store keeps its artifacts
    in mlartifacts/ beside the store's file, not in whatever directory the command ran in."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UserError(f"the MLflow experiment {name!r} in {uri} is deleted: restore it there, "
                            "or name another with --track.experiment.")
        return found.experiment_id
    db = sqlite_file(uri)
    location = (db.parent / ARTIFACTS).as_uri() if db is not None else None
    return client.create_experiment(name, artifact_location=location)


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """What the store answers a request with, when it refuses it, as one sentence naming the store."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise UserError(f"the MLflow store {uri} refused a request: {_first_line(exc)}") from exc
