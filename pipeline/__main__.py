"""`python -m pipeline`: one subcommand per stage, and `run` for all of them.

    python -m pipeline run --out DIR                 every stage, embedded Ray unless --address/RAY_ADDRESS
    python -m pipeline teacher|label|train|eval --out DIR
                                                     one stage, continuing the run recorded in DIR
    python -m pipeline label --repair --out DIR      relabel only the shards that are missing or altered
    python -m pipeline eval DIR --min-agreement 0.99 exit 3 if held-out agreement is below the bar
    python -m pipeline sweep DIR --sweep.widths '[8,32,128]'
                                                     students of several sizes: the smallest reaching the target
    python -m pipeline promote DIR --registry REG    serve DIR's student if no worse than REG's current one
    python -m pipeline rollback --registry REG       serve the version before the current one again
    python -m pipeline run --out DIR --track.to mlflow:URI|tensorboard:LOGDIR
                                                     also send config, curves, report and student to a tracker
    python -m pipeline promote DIR --registry mlflow:NAME
                                                     the same, into an MLflow registered model (alias champion)

Every config key is an option (`--train.max_epochs 5`), and `--config FILE.yaml` overrides defaults.
Exit codes: 0 ok, 1 user error (missing/corrupt file, mismatched teacher or output directory),
2 bad config or usage, 3 promotion gate failed or promotion refused.
"""

from __future__ import annotations

import dataclasses
import sys
from argparse import ArgumentError
from typing import Callable, Optional

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from pipeline.run import output, rundir
from pipeline.config import Config
from pipeline.config_file import check_config_options, read_mapping
from pipeline.errors import EXIT_CONFIG_ERROR, EXIT_GATE_FAILED, EXIT_OK, EXIT_USER_ERROR, UserError
from pipeline.run.lock import output_lock
from pipeline.promote import cli as registry_cli


def _teacher(cfg: Config) -> None:
    from pipeline.teach.stage import run_teacher_stage

    r = run_teacher_stage(cfg)
    c = r.card
    accuracy = f", test accuracy {c.test_accuracy:.4f}" if c.test_accuracy is not None else ""
    output.result(f"teacher {r.action}: {c.kind} {c.arch or 'program'}, {c.num_outputs} outputs{accuracy}, "
          f"fingerprint {c.fingerprint[:12]}")


def _label(cfg: Config) -> None:
    from pipeline.label.repair import repair_line
    from pipeline.label.stage import run_label_stage

    for split, s in run_label_stage(cfg).splits.items():
        if cfg.label.repair:
            output.result(repair_line(split, s))
            continue
        output.result(f"{split}: {s.rows:,} rows in {s.shards} shards ({s.written} written, {s.skipped} already there, "
              f"{s.rejected} rows rejected for non-finite or failed teacher outputs) in {s.split_dir}")
        if s.first_error:
            output.result(f"  first teacher failure in {split}: {s.first_error}")


def _train(cfg: Config) -> None:
    from pipeline.train.stage import run_train_stage

    r = run_train_stage(cfg)
    output.result(f"student {r.action}: {r.card.arch}, {r.card.params:,} params, {r.card.epochs} epochs -> {r.weights}")


def _adapt(cfg: Config) -> None:
    from pipeline.adapt.loop import run_adapt

    run_adapt(cfg)


def _eval(cfg: Config) -> int:
    from pipeline.evaluate.stage import run_eval_stage

    return _summary(cfg, run_eval_stage(cfg))


def _summary(cfg: Config, report) -> int:
    from pipeline.evaluate.report import gate_line, terminal_summary

    output.result(terminal_summary(report))
    output.result(f"report: {rundir.RunPaths(cfg.out).report_json} (and report.md, report.html)")
    if report.gate_passed is False:
        output.error(gate_line(report), EXIT_GATE_FAILED)
        return EXIT_GATE_FAILED
    return EXIT_OK


def _sweep(cfg: Config) -> None:
    from pipeline.sweep.stage import run_sweep
    from pipeline.tasks import get_task
    from pipeline.tasks.report_format import text_table

    section, quantile = get_task(cfg.task.kind).render(), cfg.eval.rel_error_quantile

    def on_done(trial: dict, done: int, total: int) -> None:
        action = "trained" if trial["trained"] else "reused"
        output.result(f"[{done}/{total}] {trial['name']} {action}: {trial['params']:,} params, "
                      f"{section.trial_line(trial, quantile)}")

    sweep = run_sweep(cfg, on_done)
    output.result(text_table(section.sweep_table(sweep)))
    smallest = sweep["smallest"]
    output.result(f"smallest student {section.sweep_result_line(sweep)}: "
          + (f"{smallest['name']} ({smallest['params']:,} params)" if smallest else "none; try wider students"))
    output.result(f"sweep: {rundir.RunPaths(cfg.out).sweep_json} (and sweep.png)")


def _verify(cfg: Config) -> int:
    from pipeline.shards.verify import verify_run

    result = verify_run(cfg.out)
    for problem in result.problems:
        output.result(f"BAD  {problem}")
    output.result(f"verified {result.checked} shard(s) in {cfg.out}: "
          f"{'all match the manifest' if result.ok else f'{len(result.problems)} problem(s)'}")
    return EXIT_OK if result.ok else EXIT_USER_ERROR


def _run(cfg: Config) -> int:
    from pipeline import track
    from pipeline.evaluate.finished import finished_report
    from pipeline.resolve import add_code_dir
    from pipeline.train.student import check_student_arch

    add_code_dir(cfg.code_dir)
    check_student_arch(cfg.student)  # a student that names nothing stops the run before hours of labeling
    report = finished_report(cfg)
    cfg = track.bind(cfg)  # a tracker (--track.to) that cannot be reached stops the run here, before any work
    if report is not None:  # every stage would only reuse what is there
        output.result(f"nothing to do: {cfg.out} is finished with this config and teacher")
        if track.enabled(cfg):  # tracking added to a finished run: it is sent what it has
            from pipeline.evaluate.stage import track_report

            track_report(cfg, rundir.RunPaths(cfg.out))
        gate = {k: getattr(cfg.eval, k) for k in ("min_agreement", "max_rel_error", "rel_error_quantile")}
        return _summary(cfg, dataclasses.replace(report, **gate))
    _teacher(cfg)
    _label(cfg)
    if cfg.adapt.rounds:
        _adapt(cfg)
    _train(cfg)  # with adapt.rounds: the last round's student, reused (and exported if it is not yet)
    return _eval(cfg)


STAGES: dict[str, tuple[Callable[[Config], Optional[int]], str]] = {
    "run": (_run, "Run every stage: teacher, label, train, eval."),
    "teacher": (_teacher, "Train the teacher on its seed dataset, or import teacher.checkpoint."),
    "label": (_label, "Generate inputs and label them with the teacher on Ray, into Parquet shards."),
    "train": (_train, "Train the student on the labeled shards with Lightning (DDP with --devices N)."),
    "eval": (_eval, "Measure student-teacher agreement and write report.json / report.md / report.html."),
    "verify": (_verify, "Check every shard against the manifest's checksums; exit 1 if any is bad or missing."),
    "sweep": (_sweep, "Train students of several sizes on the run's shards (Ray) and find the smallest that reaches the target agreement."),
}


def add_output_arguments(sub: ArgumentParser) -> None:
    sub.add_argument("--quiet", action="store_true", help="No progress; only results, warnings and errors.")
    sub.add_argument("--log-format", choices=output.MODES[:2], default="text",
                     help="text: bars in a terminal, a progress line every few seconds elsewhere; "
                          "json: one JSON object per event (results on stdout, the rest on stderr).")


def output_options(argv: list[str]) -> tuple[str, bool]:
    """(--log-format, --quiet) as given, read before parsing so that parse errors follow them too."""
    log_format = "text"
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            log_format = argv[i + 1]
        elif arg.startswith("--log-format="):
            log_format = arg.split("=", 1)[1]
    return (log_format if log_format in output.MODES[:2] else "text"), "--quiet" in argv


def build_parser(only: str | None = None, help_texts: bool = True) -> ArgumentParser:
    """The command line's parser: every command, or only the command `only`, all that parsing one of
    its command lines needs. With `help_texts`, the docstring under each config field becomes its
    --help text; reading them all takes a second or more, which parse() spends only on --help."""
    set_parsing_settings(docstring_parse_attribute_docstrings=help_texts)
    parser = ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n\n")[0], exit_on_error=False)
    subcommands = parser.add_subcommands(dest="stage")
    for name, (_, help_text) in STAGES.items():
        if only not in (None, name):
            continue
        sub = ArgumentParser(description=help_text, exit_on_error=False)
        if name in ("eval", "verify", "sweep"):
            sub.add_argument("dir", nargs="?", default=None, help="Output directory of the run (same as --out).")
        if name in ("eval", "run", "sweep"):
            sub.add_argument("--min-agreement", type=Optional[float], default=None,
                             help="Exit with code 3 if held-out top-1 agreement is below this (eval.min_agreement).")
            sub.add_argument("--max-rel-error", type=Optional[float], default=None,
                             help="Regression: exit with code 3 if the held-out relative L2 error at "
                                  "eval.rel_error_quantile (default p95) is above this (eval.max_rel_error).")
        if name == "label":
            sub.add_argument("--repair", action="store_true",
                             help="Relabel recorded shards that are missing or altered; leave the rest (label.repair).")
        if name in ("run", "train"):
            sub.add_argument("--devices", type=Optional[int], default=None,
                             help="DDP processes for the train stage (train.devices).")
            sub.add_argument("--resume", action="store_true",
                             help="Continue an interrupted training run from its last checkpoint (train.resume).")
        add_output_arguments(sub)
        sub.add_argument("--config", action=ActionConfigFile, help="A YAML file of config values.")
        sub.add_class_arguments(Config, as_group=False)
        subcommands.add_subcommand(name, sub, help=help_text)
    for name, help_text in registry_cli.COMMANDS.items():  # promote, rollback: a registry, not a run's config
        if only not in (None, name):
            continue
        sub = ArgumentParser(description=help_text, exit_on_error=False)
        registry_cli.add_arguments(sub, name)
        add_output_arguments(sub)
        subcommands.add_subcommand(name, sub, help=help_text)
    return parser


def _to_config(parser: ArgumentParser, ns) -> Config:
    stage_ns = parser.instantiate(ns)[ns.stage]
    names = {f.name for f in dataclasses.fields(Config)}
    cfg = Config(**{k: v for k, v in vars(stage_ns).items() if k in names})
    if getattr(stage_ns, "dir", None):
        cfg.out = stage_ns.dir
    if getattr(stage_ns, "min_agreement", None) is not None:
        cfg.eval = dataclasses.replace(cfg.eval, min_agreement=stage_ns.min_agreement)
    if getattr(stage_ns, "max_rel_error", None) is not None:
        cfg.eval = dataclasses.replace(cfg.eval, max_rel_error=stage_ns.max_rel_error)
    if getattr(stage_ns, "devices", None) is not None:
        cfg.train = dataclasses.replace(cfg.train, devices=stage_ns.devices)
    if getattr(stage_ns, "resume", False):
        cfg.train = dataclasses.replace(cfg.train, resume=True)
    if getattr(stage_ns, "repair", False):
        cfg.label = dataclasses.replace(cfg.label, repair=True)
    from pipeline.kinds import check_kinds  # here: the kinds import torch, which --help never needs

    return check_kinds(cfg)


def parse(argv: list[str]) -> tuple[str, Config]:
    check_config_options(argv)
    command = argv[0] if argv and (argv[0] in STAGES or argv[0] in registry_cli.COMMANDS) else None
    parser = build_parser(command, help_texts=any(arg in ("-h", "--help") for arg in argv))
    ns = parser.parse_args(argv)
    if ns.stage in registry_cli.COMMANDS:
        return ns.stage, registry_cli.to_config(ns.stage, ns[ns.stage])
    out = getattr(ns[ns.stage], "dir", None) or ns[ns.stage].out
    saved = rundir.saved_config_path(out)
    if ns.stage != "run" and saved and argv and argv[0] == ns.stage:
        # A single stage continues the run in DIR: its recorded config is the base, options on top.
        read_mapping(saved)  # a damaged one is a user error naming it, not a parser message
        ns = parser.parse_args([argv[0], "--config", saved, *argv[1:]])
    return ns.stage, _to_config(parser, ns)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log_format, quiet = output_options(argv)
    output.configure(log_format, quiet, stage=argv[0] if argv else "")
    try:
        stage, cfg = parse(argv)
    except ArgumentError as exc:
        output.error(_one_line(exc), EXIT_CONFIG_ERROR)
        return EXIT_CONFIG_ERROR
    except UserError as exc:
        output.error(_one_line(exc), exc.exit_code)
        return exc.exit_code
    try:
        if stage == "verify":  # reads only: no lock, so it can check a run that is in progress
            return _verify(cfg)
        if stage in registry_cli.COMMANDS:  # reads the run; locks the registry it writes
            return registry_cli.run(stage, cfg)
        with output_lock(cfg.out):
            return STAGES[stage][0](cfg) or EXIT_OK
    except UserError as exc:
        output.error(_one_line(exc), exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("interrupted: rerun the same command to finish; completed work is kept.", 130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
