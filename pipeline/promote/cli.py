"""The `promote` and `rollback` subcommands: their options, and what they report and return.

Kept apart from pipeline.__main__ (which maps the run's stages onto a run Config) because these take
a registry, not a run's config: a file registry (pipeline/promote/registry.py), or a registered model
in MLflow (`--registry mlflow:NAME`, pipeline/promote/mlflow_registry.py). Imported by the entry point at
start-up, so torch and the stages are imported only when a command runs.

Exit codes: 0 promoted (or already current) / rolled back, 3 refused (the gate or the champion), 1 a
user error, 2 a bad option.
"""

from __future__ import annotations

import sys

from pipeline.errors import EXIT_GATE_FAILED, EXIT_OK
from pipeline.run import output

COMMANDS = {
    "promote": "Compare RUN's student with the registry's current one on RUN's held-out shards; make it current "
               "if it passes the gate and is no worse by more than --tolerance (exit 3 if refused).",
    "rollback": "Make the version current again that the registry's current version replaced.",
}


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--registry", type=str, required=True,
                        help="The registry: a local path or a pyarrow filesystem URI (file://, s3://, gs://), or "
                             "mlflow:NAME, a registered model in an MLflow store (alias champion: the one served).")
    parser.add_argument("--mlflow-uri", type=str | None, default=None,
                        help="The MLflow store of an mlflow:NAME registry, e.g. sqlite:///mlflow.db "
                             "(default: MLFLOW_TRACKING_URI).")
    if name != "promote":
        return
    parser.add_argument("dir", help="The run whose student is the challenger (its output directory).")
    parser.add_argument("--tolerance", type=float, default=0.001,
                        help="How much worse than the champion the challenger may be: held-out top-1 agreement "
                             "(classification) or held-out relative L2 error (regression).")
    parser.add_argument("--min-agreement", type=float | None, default=None,
                        help="The gate: refuse a challenger whose held-out top-1 agreement is below this.")
    parser.add_argument("--max-rel-error", type=float | None, default=None,
                        help="The gate (regression): refuse a challenger whose held-out relative L2 error "
                             "(p95) is above this.")
    parser.add_argument("--code_dir", type=str | None, default=None,
                        help="A directory of your own modules, when a student's architecture is an import path.")


def to_config(name: str, ns):
    from pipeline.promote.stage import PromoteConfig, RollbackConfig

    if name == "rollback":
        return RollbackConfig(registry=ns.registry, mlflow_uri=ns.mlflow_uri)
    return PromoteConfig(run=ns.dir, registry=ns.registry, tolerance=ns.tolerance, min_agreement=ns.min_agreement,
                         max_rel_error=ns.max_rel_error, code_dir=ns.code_dir, mlflow_uri=ns.mlflow_uri)


def _stages(registry: str):
    """(run_promote, run_rollback, a version's name in messages, what a server reads) of the registry's
    kind: files, or a registered model in MLflow."""
    from pipeline.promote.stage import MLFLOW

    if registry.startswith(MLFLOW):
        from pipeline.promote import mlflow_registry

        return (mlflow_registry.run_promote, mlflow_registry.run_rollback, lambda version: f"version {version}",
                lambda version: f"{mlflow_registry.serving_uri(registry)} -> version {version}")
    from pipeline.promote.registry import Registry
    from pipeline.promote.stage import run_promote, run_rollback

    return run_promote, run_rollback, str, lambda version: f"{Registry(registry).current_path} -> {version}"


def run(name: str, cfg) -> int:
    """Run the command and report its outcome through pipeline.run.output, as every command does:
    a result on stdout (one JSON object with --log-format json), a refusal as one line on stderr."""
    run_promote, run_rollback, label, serving = _stages(cfg.registry)
    if name == "rollback":
        r = run_rollback(cfg)
        output.result(f"rolled back {cfg.registry} from {label(r.previous)} to {label(r.version)}; "
                      f"{serving(r.version)}",
                      action="rollback", registry=cfg.registry, version=r.version, previous=r.previous)
        return EXIT_OK
    r = run_promote(cfg)
    fields = {"action": r.action, "run": cfg.run, "registry": cfg.registry, "version": r.version,
              "champion": r.champion, "reason": r.reason, "challenger_metrics": r.challenger,
              "champion_metrics": r.champion_metrics}
    if r.action == "refused":
        _refused(r.reason)
        return EXIT_GATE_FAILED
    if r.action == "current":
        output.result(f"nothing to do: {r.reason}.", **fields)
    else:
        output.result(f"promoted {cfg.run} as {label(r.version)} in {cfg.registry} ({r.reason}); "
                      f"{serving(r.version)}", **fields)
    return EXIT_OK


def _refused(reason: str) -> None:
    """A refusal is the command's verdict, not a mistake: as text it reads "refused: ..." without the
    "error:" of a user error; as JSON it is an error event with exit code 3, as a failed eval gate is."""
    if output.mode() == "json":
        output.error(f"refused: {reason}", EXIT_GATE_FAILED)
    else:
        print(f"refused: {reason}", file=sys.stderr, flush=True)
