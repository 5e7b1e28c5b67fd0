"""The run's task and input space objects, and their checks of the config.

The config's dataclasses check each field on its own; whether the options fit the kind of target
(task.kind) and of input (data.space) is the task's and the space's to say, here, before anything
runs: on the command line and in every stage called from Python (pipeline.run.rundir.prepare)."""

from __future__ import annotations

from pipeline.config import Config
from pipeline.errors import ConfigError, UserError
from pipeline.inputs import SPACES, InputSpace, get_space
from pipeline.tasks import TASKS, Task, get_task


def task_of(cfg: Config) -> Task:
    try:
        return get_task(cfg.task.kind)
    except UserError:
        raise ConfigError(f"task.kind must be one of {', '.join(TASKS)}, got {cfg.task.kind!r}.") from None


def space_of(cfg: Config) -> InputSpace:
    try:
        return get_space(cfg.data.space)
    except UserError:
        raise ConfigError(f"data.space must be one of {', '.join(SPACES)}, got {cfg.data.space!r}.") from None


def check_kinds(cfg: Config) -> Config:
    """Refuse options that do not fit the run's task or input space (ConfigError, exit 2); returns cfg."""
    task_of(cfg).check_config(cfg)
    space_of(cfg).check_config(cfg)
    return cfg
