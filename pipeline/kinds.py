"""The run's task and input space objects, and their checks of the config.

The config's dataclasses check each field on its own; whether the options fit the kind of target
(task.kind) and of input (data.space) is the task's and the space's to say, here, before anything
runs: on the command line and in every stage called from Python (pipeline.run.rundir.prepare)."""

from __future__ import annotations

import dataclasses
import logging

from pipeline.config import Config
from pipeline.errors import ConfigError, UserError
from pipeline.inputs import SPACES, InputSpace, get_space
from pipeline.tasks import TASKS, Task, get_task

log = logging.getLogger(__name__)


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
    """Refuse options that do not fit the run's task or input space (ConfigError, exit 2), and fill
    the student and training settings the config leaves to the task (resolve_defaults); returns cfg."""
    task_of(cfg).check_config(cfg)
    space_of(cfg).check_config(cfg)
    if cfg.data.store_inputs == "recipe" and not space_of(cfg).stores_recipes:
        raise ConfigError(f"data.store_inputs recipe is for generated images; data.space {cfg.data.space} stores "
                          "its inputs themselves (set pixels or auto).")
    resolve_defaults(cfg)
    return cfg


def resolve_defaults(cfg: Config) -> dict[str, object]:
    """Set, in place, every student and training field left unset (None) to the task's choice, and
    say what was chosen from the run's config; returns {"section.field": value} of what was set.
    Once set, the values are recorded with the run like any other, so a later stage or rerun finds
    them and chooses nothing again."""
    chosen, why = task_of(cfg).defaults(cfg)
    # The student's architecture is the input space's to suggest (an MLP for vectors and images, a
    # neural operator for fields); its sizes and training the task's, which may ask the space too.
    chosen.setdefault("student", {}).setdefault("arch", space_of(cfg).default_student)
    filled: dict[str, object] = {}
    for section, values in chosen.items():
        current = getattr(cfg, section)
        unset = {k: v for k, v in values.items() if v is not None and getattr(current, k) is None}
        if unset:
            setattr(cfg, section, dataclasses.replace(current, **unset))
            filled |= {f"{section}.{k}": v for k, v in unset.items()}
    if filled and why:
        log.info("%s: %s.", why, ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in filled.items()))
    return filled
