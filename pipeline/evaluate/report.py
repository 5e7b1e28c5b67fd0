"""The report: report.json (a stable contract for machines), report.md, report.html with its
figures embedded, PNG figures in DIR/plots/, and a terminal table (for people).

report.json holds what every run has (task, teacher, student, params, curves, rejected rows, gate,
sweep, active rounds) and the section of the run's task, and nothing of another task's: a
classification run's `agreement.{train,heldout}.{top1,top5,kl}` and `accuracy.{teacher,student}`
(pipeline/tasks/classification_report.py), a regression run's `regression`, `speed` and `speedup`
(pipeline/tasks/regression_report.py). Keys are added beside those, never in their place. Every page
and figure is drawn from the Report alone, so they can be redrawn from report.json (as the sweep
does when it adds its results).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from pipeline.errors import UserError
from pipeline.fields import type_problem
from pipeline.run import storage
from pipeline.run.rundir import RunPaths
from pipeline.tasks import Task, get_task
from pipeline.tasks import report_format

SPLIT_ORDER = ("train", "heldout", "test")
# Fields that belong to one task's section (its report_keys); report.json leaves out the others'.
TASK_SECTIONS = {"agreement", "accuracy", "classes", "calibration", "reliability", "per_class_agreement", "confusion",
                 "latency", "gallery", "regression", "speed", "speedup"}
PER_SPLIT = ("agreement", "calibration", "reliability", "per_class_agreement", "confusion")


def _in_split_order(section: dict) -> dict:
    # report.json is written with sorted keys; tables and figures read best in pipeline order.
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    return dict(sorted(section.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


@dataclass
class Report:
    params: dict  # {"teacher", "student"} parameter counts
    agreement: dict = field(default_factory=dict)  # split -> {"top1", "top5", "kl", "js", "samples"}; fractions, nats
    accuracy: dict = field(default_factory=dict)  # {"teacher", "student", "test_samples"} on the real test split
    teacher: dict = field(default_factory=dict)
    student: dict = field(default_factory=dict)
    rejected_rows: dict = field(default_factory=dict)  # split -> rows dropped for non-finite teacher logits
    min_agreement: float | None = None
    classes: list = field(default_factory=list)
    calibration: dict = field(default_factory=dict)  # split -> {"student_vs_teacher", "teacher", "student"}: ECE
    reliability: dict = field(default_factory=dict)  # split -> same keys -> {"count", "confidence", "accuracy"} per bin
    per_class_agreement: dict = field(default_factory=dict)  # split -> [agreement per teacher class, None if empty]
    confusion: dict = field(default_factory=dict)  # split -> [[count]]: rows teacher's class, columns student's
    latency: dict | None = None  # {"teacher": {"batch1_ms", "batch256_ms"}, "student": {...}, "speedup": {...}}
    curves: dict = field(default_factory=dict)  # {"epoch": [...], "train/loss": [...], ...}
    sweep: dict | None = None  # the capacity sweep (sweep.json), when one was run
    task: str = "classification"
    input_space: str = "images"  # how the report shows an input (pipeline.inputs)
    # Regression (a simulator's surrogate): split -> {"rel_l2": {median, p95, p99, max, mean}, "max_abs",
    # "r2", "r2_mean", "within_tolerance", "samples"}; and the figures' data under "details".
    regression: dict | None = None
    speed: dict | None = None  # regression: {"teacher": samples/s while labeling, "student": CPU samples/s}
    speedup: dict | None = None  # regression: {"batch1", "batch1024"}: student samples/s over the simulator's
    first_errors: dict = field(default_factory=dict)  # split -> the teacher's first failure on a batch
    max_rel_error: float | None = None
    rel_error_quantile: str = "p95"
    # Classification: the worst held-out rows, {"split", "input_space", "rows": [...]} (pipeline.tasks.worst).
    gallery: dict | None = None
    # Active distillation: DIR/adapt/rounds.json ({"rounds", "uniform", "gallery"}; pipeline/adapt/loop.py).
    adapt: dict | None = None

    @property
    def task_object(self) -> Task:
        return get_task(self.task)

    def heldout_values(self) -> dict:
        """The held-out split's computed metric values, in the task's section."""
        return (getattr(self, self.task_object.metrics_section) or {}).get("heldout") or {}

    @property
    def gate_value(self) -> float | None:
        """What the gate reads: the task's held-out headline figure (top-1 agreement, a relative-error quantile)."""
        return self.task_object.headline_value(self.heldout_values(), self.rel_error_quantile)

    @property
    def gate_bar(self) -> float | None:
        return self.task_object.gate_bar(self.min_agreement, self.max_rel_error)

    @property
    def gate_passed(self) -> bool | None:
        """None without a gate; else whether the held-out headline figure is on the right side of its bar."""
        bar = self.gate_bar
        if bar is None:
            return None
        value = self.gate_value
        if value is None:
            return False
        return self.task_object.headline(self.rel_error_quantile).better_or_equal(value, bar)

    def to_dict(self) -> dict:
        """report.json: the common fields and the run's task's section, no other task's keys."""
        data = asdict(self)
        own = set(self.task_object.report_keys)
        for key in TASK_SECTIONS - own:
            del data[key]
        data["gate"] = {**self.task_object.gate_fields(self.min_agreement, self.max_rel_error, self.rel_error_quantile),
                        "passed": self.gate_passed}
        for key in ("min_agreement", "max_rel_error", "rel_error_quantile"):
            del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        data = dict(data)
        gate = data.pop("gate", None) or {}
        data["min_agreement"] = gate.get("min_agreement")
        data["max_rel_error"] = gate.get("max_rel_error")
        data["rel_error_quantile"] = gate.get("rel_error_quantile") or "p95"
        for name in PER_SPLIT:
            if isinstance(data.get(name), dict):
                data[name] = _in_split_order(data[name])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def kwargs_text(student: dict) -> str:
    return report_format.kwargs_text(student)


def terminal_summary(report: Report) -> str:
    return report.task_object.render().terminal(report)


def gate_line(report: Report) -> str | None:
    """The gate's verdict in one line, in the task's words (None without a gate)."""
    return report.task_object.render().gate_line(report)


def load_report(paths: RunPaths) -> Report | None:
    """The run's report, None if it has none; a UserError naming the file when it is not a report."""
    if not storage.exists(paths.report_json):
        return None
    data = storage.read_json(paths.report_json)
    again = f"write it again with `python -m pipeline eval {paths.root}`"
    problem = type_problem(Report, data) if isinstance(data, dict) else f"a JSON {type(data).__name__}"
    if problem:
        raise UserError(f"{paths.report_json} is not a report this version reads ({problem}): {again}.")
    try:
        return Report.from_dict(data)
    except (TypeError, AttributeError, ValueError) as exc:  # missing fields
        raise UserError(f"{paths.report_json} is not a report this version reads ({exc}): {again}.") from exc
