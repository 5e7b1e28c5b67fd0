"""The report: report.json (a stable contract for machines), report.md and a terminal table (for people)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline import storage
from pipeline.rundir import RunPaths


@dataclass
class Report:
    agreement: dict  # split -> {"top1", "top5", "kl", "samples"}; fractions in [0, 1], KL in nats
    accuracy: dict  # {"teacher", "student"} on the real test split, fractions
    params: dict  # {"teacher", "student"} parameter counts
    teacher: dict = field(default_factory=dict)
    student: dict = field(default_factory=dict)
    rejected_rows: dict = field(default_factory=dict)  # split -> rows dropped for non-finite teacher logits
    min_agreement: float | None = None

    @property
    def gate_passed(self) -> bool | None:
        """None without a gate; else whether held-out top-1 agreement reaches min_agreement."""
        if self.min_agreement is None:
            return None
        top1 = self.agreement.get("heldout", {}).get("top1")
        return top1 is not None and top1 >= self.min_agreement

    def to_dict(self) -> dict:
        data = asdict(self)
        data["gate"] = {"min_agreement": self.min_agreement, "passed": self.gate_passed}
        del data["min_agreement"]
        return data


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def agreement_table(report: Report) -> list[list[str]]:
    rows = [["split", "samples", "top-1 agreement", "top-5 agreement", "KL(teacher‖student)"]]
    for split, m in report.agreement.items():
        rows.append([split, f"{m['samples']:,}", _fmt(m["top1"]), _fmt(m["top5"]), _fmt(m["kl"], 5)])
    return rows


def summary_lines(report: Report) -> list[str]:
    p, a = report.params, report.accuracy
    lines = [
        f"test accuracy: teacher {_fmt(a['teacher'])}, student {_fmt(a['student'])} ({a['test_samples']} real test images)",
        f"parameters: teacher {p['teacher']:,}, student {p['student']:,} ({p['teacher'] / p['student']:.1f}x fewer)",
    ]
    if report.gate_passed is not None:
        verdict = "passed" if report.gate_passed else "FAILED"
        lines.append(f"promotion gate: held-out top-1 agreement >= {report.min_agreement}: {verdict}")
    return lines


def _text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def terminal_summary(report: Report) -> str:
    return "\n".join([_text_table(agreement_table(report)), "", *summary_lines(report)])


def markdown(report: Report) -> str:
    t, s = report.teacher, report.student
    return "\n".join([
        "# Distillation report", "",
        f"Teacher `{t.get('arch')}` (fingerprint `{str(t.get('fingerprint'))[:12]}`, dataset {t.get('dataset')}); "
        f"student `{s.get('arch')}` width {s.get('width')}, depth {s.get('depth')}, trained {s.get('epochs')} epochs.", "",
        "## Student–teacher agreement", "", _markdown_table(agreement_table(report)), "",
        *[f"- {line}" for line in summary_lines(report)], "",
    ])


def write_report(paths: RunPaths, report: Report) -> None:
    storage.write_json_atomic(paths.report_json, report.to_dict())
    storage.write_bytes_atomic(paths.report_md, markdown(report).encode())
