"""The report: report.json (a stable contract for machines), report.md, report.html with its
figures embedded, PNG figures in DIR/plots/, and a terminal table (for people).

report.json always holds `agreement.{train,heldout}.{top1,top5,kl}`, `accuracy.{teacher,student}`
and `params.{teacher,student}` (fractions in [0, 1], KL in nats); everything else is added beside
those keys, never in their place. Every page and figure is drawn from the Report alone, so they
can be redrawn from report.json (as the sweep does when it adds its results).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from pipeline.errors import UserError
from pipeline.fields import type_problem
from pipeline.run import storage
from pipeline.run.rundir import RunPaths

SPLIT_ORDER = ("train", "heldout", "test")
PER_SPLIT = ("agreement", "calibration", "reliability", "per_class_agreement", "confusion")


def _in_split_order(section: dict) -> dict:
    # report.json is written with sorted keys; tables and figures read best in pipeline order.
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    return dict(sorted(section.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


@dataclass
class Report:
    agreement: dict  # split -> {"top1", "top5", "kl", "js", "samples"}; fractions in [0, 1], KL and JS in nats
    accuracy: dict  # {"teacher", "student", "test_samples"} on the real test split, fractions
    params: dict  # {"teacher", "student"} parameter counts
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
    # Regression (a simulator's surrogate): split -> {"rel_l2": {median, p95, p99, max, mean}, "max_abs",
    # "r2", "r2_mean", "within_tolerance", "samples"}; and the figures' data under "details".
    regression: dict | None = None
    speed: dict | None = None  # regression: {"teacher": samples/s while labeling, "student": CPU samples/s}
    speedup: dict | None = None  # regression: {"batch1", "batch1024"}: student samples/s over the simulator's
    first_errors: dict = field(default_factory=dict)  # split -> the teacher's first failure on a batch
    max_rel_error: float | None = None
    rel_error_quantile: str = "p95"
    # Classification: the worst held-out rows, {"split", "input_space", "rows": [...]} (pipeline.evaluate.worst).
    gallery: dict | None = None
    # Active distillation: DIR/adapt/rounds.json ({"rounds", "uniform", "gallery"}; pipeline/adapt/loop.py).
    adapt: dict | None = None

    @property
    def gate_value(self) -> float | None:
        """What the gate reads: held-out top-1 agreement, or a held-out relative-error quantile."""
        if self.task == "regression":
            return ((self.regression or {}).get("heldout", {}).get("rel_l2") or {}).get(self.rel_error_quantile)
        return self.agreement.get("heldout", {}).get("top1")

    @property
    def gate_passed(self) -> bool | None:
        """None without a gate; else whether held-out top-1 agreement reaches min_agreement, or (regression)
        the held-out relative error at rel_error_quantile stays within max_rel_error."""
        bar = self.max_rel_error if self.task == "regression" else self.min_agreement
        if bar is None:
            return None
        value = self.gate_value
        if value is None:
            return False
        return value <= bar if self.task == "regression" else value >= bar

    def to_dict(self) -> dict:
        data = asdict(self)
        data["gate"] = {"min_agreement": self.min_agreement, "max_rel_error": self.max_rel_error,
                        "rel_error_quantile": self.rel_error_quantile, "passed": self.gate_passed}
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


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def kwargs_text(student: dict) -> str:
    """A student's factory arguments, in a stable order (report.json is written with sorted keys)."""
    kwargs = student.get("kwargs") or {}
    return ", ".join(f"{k}={kwargs[k]}" for k in sorted(kwargs))


def _ms(value) -> str:
    return "–" if value is None else f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _size_ratio(teacher: int, student: int) -> str:
    if student <= teacher:
        return f"{teacher / student:.1f}x fewer"
    return f"{student / teacher:.1f}x more"


def agreement_table(report: Report) -> list[list[str]]:
    rows = [["split", "samples", "top-1 agreement", "top-5 agreement", "KL(teacher‖student)", "JS", "ECE vs teacher"]]
    for split, m in report.agreement.items():
        ece = report.calibration.get(split, {}).get("student_vs_teacher")
        rows.append([split, f"{m['samples']:,}", _fmt(m["top1"]), _fmt(m["top5"]), _fmt(m["kl"], 5),
                     _fmt(m.get("js"), 5), _fmt(ece)])
    return rows


def calibration_line(report: Report) -> str | None:
    test = report.calibration.get("test", {})
    if "teacher" not in test:
        return None
    return f"calibration on real test data (ECE): teacher {_fmt(test['teacher'])}, student {_fmt(test.get('student'))}"


def latency_lines(report: Report) -> list[str]:
    lat = report.latency
    if not lat:
        return []
    t, s, x = lat["teacher"], lat["student"], lat["speedup"]
    return [(f"CPU latency ({lat['threads']} thread(s)), batch 1: teacher {_ms(t['batch1_ms'])}, "
            f"student {_ms(s['batch1_ms'])} ({_faster(x['batch1'])}); batch 256: teacher "
            f"{_ms(t['batch256_ms'])}, student {_ms(s['batch256_ms'])} ({_faster(x['batch256'])})")]


def _faster(speedup: float) -> str:
    """"4.9x faster", or "1.7x slower" for a student slower than its teacher."""
    return f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.1f}x slower"


def weakest_classes(report: Report, split: str = "heldout", limit: int = 3) -> list[tuple[str, float]]:
    values = report.per_class_agreement.get(split) or []
    pairs = [(report.classes[i], v) for i, v in enumerate(values) if v is not None and i < len(report.classes)]
    return sorted(pairs, key=lambda p: p[1])[:limit]


def gate_line(report: Report) -> str | None:
    if report.gate_passed is None:
        return None
    if report.task == "regression":
        q, value = report.rel_error_quantile, report.gate_value
        if value is None:
            return f"promotion gate: held-out relative L2 error {q} <= {report.max_rel_error}: FAILED (no held-out shards)"
        verdict = "passed" if report.gate_passed else "FAILED"
        return f"promotion gate: held-out relative L2 error {q} {value:.3g} <= {report.max_rel_error}: {verdict}"
    top1 = report.agreement.get("heldout", {}).get("top1")
    if top1 is None:
        return (f"promotion gate: held-out top-1 agreement >= {report.min_agreement}: FAILED "
                "(no held-out shards to measure it on; set data.heldout_shards)")
    verdict = "passed" if report.gate_passed else "FAILED"
    return f"promotion gate: held-out top-1 agreement {top1:.4f} >= {report.min_agreement}: {verdict}"


def summary_lines(report: Report) -> list[str]:
    from pipeline.tasks.metrics import (
        top_confusions,  # torchmetrics: imported when a report is shown, not by every CLI command
    )

    p, a = report.params, report.accuracy
    lines = []
    if a.get("teacher") is not None:
        lines.append(f"test accuracy: teacher {_fmt(a['teacher'])}, student {_fmt(a['student'])} "
                     f"({a['test_samples']} real test inputs)")
    if p.get("teacher"):
        lines.append(f"parameters: teacher {p['teacher']:,}, student {p['student']:,} "
                     f"({_size_ratio(p['teacher'], p['student'])})")
    else:
        lines.append(f"parameters: student {p['student']:,} (the teacher has no countable weights)")
    lines += [line for line in [calibration_line(report)] if line]
    lines += latency_lines(report)
    weakest = weakest_classes(report)
    if weakest:
        lines.append("weakest held-out classes: " + ", ".join(f"{c} {v:.3f}" for c, v in weakest))
    confusions = top_confusions(report.confusion.get("heldout"), report.classes, limit=3)
    if confusions:
        lines.append("most frequent held-out disagreements (teacher → student): "
                     + ", ".join(f"{c['teacher']}→{c['student']} ({c['count']})" for c in confusions))
    lines += [line for line in [gate_line(report)] if line]
    return lines


def sweep_table(sweep: dict) -> list[list[str]]:
    rows = [["student", "params", "train top-1", "heldout top-1", "heldout KL", "batch-1 latency",
             "batch-256 latency", "epochs", ""]]
    smallest = (sweep.get("smallest") or {}).get("name")
    for t in sorted(sweep["trials"], key=lambda t: t["params"]):
        lat = t.get("latency") or {}
        mark = f"◀ smallest reaching {sweep['target']}" if t["name"] == smallest else ""
        rows.append([t["name"], f"{t['params']:,}", _fmt(t["agreement"]["train"]), _fmt(t["agreement"]["heldout"]),
                     _fmt(t.get("kl", {}).get("heldout"), 5), _ms(lat.get("batch1_ms")), _ms(lat.get("batch256_ms")),
                     str(t.get("epochs", "")), mark])
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def regression_table(report: Report) -> list[list[str]]:
    rows = [["split", "samples", "rel. L2 median", "p95", "p99", "max", "max |error|", "R² (mean)",
             f"within {report.regression.get('tolerance', '')}"]]
    for split, m in report.regression.items():
        if not isinstance(m, dict) or "rel_l2" not in m:
            continue
        r = m["rel_l2"] or {}
        rows.append([split, f"{m['samples']:,}", *(_sci(r.get(q)) for q in ("median", "p95", "p99", "max")),
                     _sci(m.get("max_abs")), _fmt(m.get("r2_mean"), 5), _fmt(m.get("within_tolerance"))])
    return rows


def _sci(value) -> str:
    return "–" if value is None else f"{value:.3e}"


def regression_lines(report: Report) -> list[str]:
    lines = []
    speed, x = report.speed or {}, report.speedup or {}
    t, s = speed.get("teacher") or {}, speed.get("student") or {}
    if t.get("samples_per_s") and s:
        lines.append(f"speed: simulator {t['samples_per_s']:,.0f} samples/s while labeling (all actors; "
                     f"{t.get('samples_per_s_per_actor') or 0:,.0f} per actor), student "
                     f"{s['samples_per_s_batch1024']:,.0f} samples/s at batch 1024 ({s['threads_batch1024']} threads, "
                     f"{x['batch1024']:,.0f}x faster) and {s['samples_per_s_batch1']:,.0f} at batch 1 (1 thread)")
    lines.append(f"parameters: student {report.params.get('student', 0):,}")
    for split, message in (report.first_errors or {}).items():
        if message:
            lines.append(f"{report.rejected_rows.get(split, 0)} {split} rows rejected; the simulator's first failure: {message}")
    lines += [line for line in [gate_line(report)] if line]
    return lines


def terminal_summary(report: Report) -> str:
    if report.task == "regression":
        return "\n".join([text_table(regression_table(report)), "", *regression_lines(report)])
    return "\n".join([text_table(agreement_table(report)), "", *summary_lines(report)])


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
