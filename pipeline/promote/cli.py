"""The `promote` and `rollback` subcommands: their options, and what they print and return.

Kept apart from pipeline.__main__ (which maps the run's stages onto a run Config) because these take
a registry, not a run's config. Imported by the entry point at start-up, so torch and the stages are
imported only when a command runs.

Exit codes: 0 promoted (or already current) / rolled back, 3 refused (the gate or the champion), 1 a
user error, 2 a bad option.
"""

from __future__ import annotations

import sys

from pipeline.errors import EXIT_GATE_FAILED, EXIT_OK

COMMANDS = {
    "promote": "Compare RUN's student with the registry's current one on RUN's held-out shards; make it current "
               "if it passes the gate and is no worse by more than --tolerance (exit 3 if refused).",
    "rollback": "Make the version current again that the registry's current version replaced.",
}


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--registry", type=str, required=True,
                        help="The registry: a local path or a pyarrow filesystem URI (file://, s3://, gs://).")
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
        return RollbackConfig(registry=ns.registry)
    return PromoteConfig(run=ns.dir, registry=ns.registry, tolerance=ns.tolerance, min_agreement=ns.min_agreement,
                         max_rel_error=ns.max_rel_error, code_dir=ns.code_dir)


def run(name: str, cfg) -> int:
    from pipeline.promote.registry import Registry
    from pipeline.promote.stage import run_promote, run_rollback

    if name == "rollback":
        r = run_rollback(cfg)
        print(f"rolled back {cfg.registry} from {r.previous} to {r.version}; "
              f"{Registry(cfg.registry).current_path} -> {r.version}")
        return EXIT_OK
    r = run_promote(cfg)
    if r.action == "refused":
        print(f"refused: {r.reason}", file=sys.stderr)
        return EXIT_GATE_FAILED
    if r.action == "current":
        print(f"nothing to do: {r.reason}.")
    else:
        print(f"promoted {cfg.run} as {r.version} in {cfg.registry} ({r.reason}); "
              f"{Registry(cfg.registry).current_path} -> {r.version}")
    return EXIT_OK
