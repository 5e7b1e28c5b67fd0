"""The output directory of a run: where each stage's files live, and which config made them.

The first stage to write into a directory records the run's config there (config.yaml, the
fields that decide results). Every later stage, and every rerun, must bring the same config: an
output directory never silently mixes the results of two configs.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from pipeline.run import storage
from pipeline.config import Config, differing_keys, result_fields
from pipeline.config_file import read_mapping
from pipeline.errors import UserError

CONFIG_NAME = "config.yaml"
STUDENT_WEIGHTS = "student.safetensors"  # inside a student's directory (the run's, or a sweep trial's)
STUDENT_CARD = "student.json"
SWEEP_DIR = "sweep"
SPLITS = ("train", "heldout")  # the shard splits under DIR/shards/: generated to train on, and held out


@dataclass(frozen=True)
class RunPaths:
    root: str

    def __post_init__(self) -> None:
        # Absolute: Ray workers may run in another working directory (a shipped code_dir).
        object.__setattr__(self, "root", storage.absolute(self.root))

    def _(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @property
    def config(self) -> str:
        return self._(CONFIG_NAME)

    @property
    def teacher_dir(self) -> str:
        """The teacher's card and its weights or program (the card's file_name)."""
        return self._("teacher")

    @property
    def teacher_card(self) -> str:
        return self._("teacher", "teacher.json")

    def split(self, name: str) -> str:
        return self._("shards", name)

    @property
    def student_dir(self) -> str:
        return self._("student")

    @property
    def student_weights(self) -> str:
        return self._("student", STUDENT_WEIGHTS)

    @property
    def student_card(self) -> str:
        return self._("student", STUDENT_CARD)

    @property
    def report_json(self) -> str:
        return self._("report.json")

    @property
    def report_md(self) -> str:
        return self._("report.md")

    @property
    def sweep_dir(self) -> str:
        """The capacity sweep's trials (one folder each), sweep.json and sweep.png."""
        return self._(SWEEP_DIR)

    @property
    def sweep_json(self) -> str:
        return self._(SWEEP_DIR, "sweep.json")


def saved_config_path(out: str) -> str | None:
    """The config.yaml recorded in `out`, if there is one (for CLI stages that continue a run)."""
    path = RunPaths(out).config
    return path if storage.exists(path) else None


def prepare(cfg: Config, create: bool = False) -> RunPaths:
    """Check the config against the one recorded in the output directory.

    With `create` (the first stage), a directory without a recorded config is fine: the stage
    records its config (`record`) once it has something to write. Later stages refuse a directory
    that no run has started in, so they never leave stray files there."""
    from pipeline.kinds import check_kinds  # the kinds import torch; rundir is read by every command line

    check_kinds(cfg)  # a stage called from Python is checked as the command line checks it
    paths = RunPaths(cfg.out)
    current = result_fields(cfg)
    if not storage.exists(paths.config) and not create:
        raise UserError(f"{cfg.out} holds no run (no {CONFIG_NAME}): start with `python -m pipeline run` "
                        "or the teacher stage.")
    if storage.exists(paths.config):
        recorded = read_mapping(paths.config)
        if recorded != current:
            keys = differing_keys(recorded, current)
            shown = ", ".join(keys[:5]) + (" …" if len(keys) > 5 else "")
            raise UserError(
                f"{cfg.out} holds a run of a different config (differs in {shown}); "
                "use another --out, or the config recorded in its config.yaml."
            )
    return paths


def record(cfg: Config) -> None:
    """Record the run's config in its output directory (once; later calls find it there)."""
    paths = RunPaths(cfg.out)
    if not storage.exists(paths.config):
        storage.write_bytes_atomic(paths.config, yaml.safe_dump(result_fields(cfg), sort_keys=True).encode())
