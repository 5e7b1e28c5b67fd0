"""The task: what a target is, how it is stored, trained, measured, gated and compared.

A task is one object (`Task`); each kind is a module that subclasses it and registers an instance
(pipeline/tasks/registry.py lists them). Stages ask the run's task (`get_task(name)`) and never
test a kind by name, so adding a kind of target means writing one module and registering it.

What a task owns, and the stage that asks:
- storage: the shard column, its dtype, which teacher outputs may be stored (label);
- configuration: which losses and options make sense (the command line, before anything runs);
- training: the objective (loss and the per-row figure, students.DistillationModule), the output
  scale fitted on the training targets, the stopping rule's figure, the progress line's words (train);
- measuring: fresh metric states of a split, their update and exact merge (eval, sweep, promote, adapt);
- reporting: its section of report.json, report.md and report.html, and its figures (eval);
- deciding: the gate, how a challenger compares with a champion (promote), what a sweep looks for
  (sweep), how active rounds score a row (adapt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from pipeline.errors import ConfigError, UserError


@dataclass(frozen=True)
class Figure:
    """A task's headline figure on a split: what it is called and which way is better."""

    name: str  # e.g. "held-out top-1 agreement"
    higher_is_better: bool

    def better_or_equal(self, value: float, bar: float) -> bool:
        return value >= bar if self.higher_is_better else value <= bar

    def worse_by_more_than(self, value: float, other: float, tolerance: float) -> bool:
        return value < other - tolerance if self.higher_is_better else value > other + tolerance


class Task:
    """The interface every kind of target implements (see the module docstring)."""

    name: str = ""
    column: str = ""  # the shard column holding the targets
    dtype: Any = np.float32  # how targets are stored
    summary: str = ""  # one line for --help and errors
    losses: tuple[str, ...] = ()
    default_loss: str = ""
    figure_words: str = ""  # the per-epoch training figure as progress lines name it
    curve_words: str = ""  # what the training curves' right panel shows (1 − that figure)
    metrics_section: str = ""  # the report field holding each split's metric values
    report_keys: tuple[str, ...] = ()  # the report fields of this task's section

    # -- storage -----------------------------------------------------------------------------
    def stored_targets(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The teacher's float32 outputs [n, K] as stored, and which rows are finite. Non-finite rows
        would poison training: they are dropped and counted, never written. (float16 overflows past
        65504, so the check comes after the cast.)"""
        with np.errstate(over="ignore"):  # an overflow is a non-finite row, dropped below
            stored = np.asarray(outputs).astype(self.dtype)
        finite = np.isfinite(stored).all(axis=1) if stored.ndim == 2 else np.zeros(len(stored), bool)
        return stored, finite

    # -- configuration -----------------------------------------------------------------------
    def check_config(self, cfg) -> None:
        """Refuse options that make no sense for this task (ConfigError, one sentence)."""
        if cfg.train.loss != "auto" and cfg.train.loss not in self.losses:
            raise ConfigError(f"train.loss {cfg.train.loss} is not a loss of task.kind {self.name}; "
                              f"expected auto or one of: {', '.join(self.losses)}.")

    def loss(self, cfg, scale=None) -> str:
        """train.loss with auto resolved (`scale`: the output scale fitted on the training targets)."""
        return self.default_loss if cfg.train.loss == "auto" else cfg.train.loss

    def defaults(self, cfg) -> tuple[dict[str, dict], str]:
        """The student and training settings this task chooses where the config leaves them unset
        (None): {"student": {...}, "train": {...}} and, when chosen from the run's config rather
        than fixed, why (said in the output); "" otherwise."""
        raise NotImplementedError

    def round_epochs(self, cfg) -> int:
        """Epochs of an active round's student when adapt.round_epochs is unset."""
        return cfg.train.max_epochs

    # -- training ----------------------------------------------------------------------------
    def output_scale(self, cfg, target_batches: Callable[[], Iterable[dict]], target_shape=None):
        """What the student's raw outputs pass through to become targets (a module fitted on the
        training targets), or None. `target_batches()` yields the training split's target column."""
        return None

    def objective(self, cfg, scale):
        """The training objective: a module called as objective(student_outputs, batch) returning
        (loss, rows agreeing), picklable for DDP ranks."""
        raise NotImplementedError

    def stopping(self, cfg) -> dict:
        """EarlyStopping's monitor, mode and min_delta on the training figures."""
        raise NotImplementedError

    # -- measuring ---------------------------------------------------------------------------
    def new_metrics(self, num_outputs: int, bins: int, tolerance: float, target_shape=None):
        """Empty, mergeable metric states of a split: update(predicted, teacher), merge(other), compute()."""
        raise NotImplementedError

    def keeps_worst_rows(self) -> bool:
        """Whether the held-out scan keeps its worst rows for the report's gallery."""
        return False

    def row_scores(self, student, teacher) -> dict[str, np.ndarray]:
        """Per-row "mismatch" (bool) and "score" (larger is worse), and "teacher_class" (-1: none):
        how active rounds rank the rows a student copies worst."""
        raise NotImplementedError

    # -- deciding ----------------------------------------------------------------------------
    def headline(self, quantile: str) -> Figure:
        """The held-out figure the gate, the registry and the sweep read."""
        raise NotImplementedError

    def headline_value(self, values: dict, quantile: str) -> float | None:
        """That figure from a split's computed metric values."""
        raise NotImplementedError

    def scalar_metrics(self, values: dict) -> dict:
        """The few figures of a split a registry records beside the compared one."""
        raise NotImplementedError

    def gate_fields(self, min_agreement, max_rel_error, quantile) -> dict:
        """The gate's options as report.json records them."""
        raise NotImplementedError

    def gate_bar(self, min_agreement: float | None, max_rel_error: float | None) -> float | None:
        """Which of the command line's bars applies to this task."""
        raise NotImplementedError

    def bar_option(self) -> str:
        """The command-line option that sets the bar, as the user types it."""
        raise NotImplementedError

    def format_value(self, value: float) -> str:
        return f"{value:.4g}"

    def round_figure(self, values: dict) -> dict:
        """The few figures of a split an active round records (report table, figure against labels)."""
        raise NotImplementedError

    def round_error(self, figures: dict) -> float:
        """From round_figure's dict, the error drawn against labels spent (lower is better)."""
        raise NotImplementedError

    round_ylabel: str = ""  # that error, as the rounds' figure names it
    round_column: tuple[str, str] = ("", "")  # (name, key of round_figure) in the rounds' table

    def round_line(self, heldout: dict, train: dict) -> str:
        """A finished round's figures, in its progress line."""
        raise NotImplementedError

    measures_accuracy: bool = False  # outputs can be scored against the seed data's true labels
    ranks_by_margin: bool = False  # a student's outputs rank inputs by how sure it is (least-sure rounds)
    compares_teacher_latency: bool = False  # the sweep times the teacher beside its students

    # -- the report --------------------------------------------------------------------------
    def build_report(self, ctx) -> dict:
        """The task's report fields (report_keys), measured through the eval stage's context
        (pipeline.evaluate.stage.EvalContext)."""
        raise NotImplementedError

    def render(self):
        """The module drawing this task's report section: TITLE, intro_markdown/html, markdown_lines,
        html_head/html_tail, gate_html, terminal, figures, and the sweep's trial_figures,
        trial_value, trial_line, sweep_table, sweep_figure, sweep_result_line."""
        raise NotImplementedError


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task kind {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def lookup(name: str) -> Task:
    """The registered task called `name`; a UserError naming the known ones otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"task kind {name!r} is unknown; expected one of: {', '.join(TASKS)}.") from None
