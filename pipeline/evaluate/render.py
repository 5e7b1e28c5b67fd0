"""Drawing a report: the PNG figures in DIR/plots/, report.md and the self-contained report.html.

Everything is drawn from the Report alone (report.json), so a report can be redrawn at any time,
as the sweep does when it adds its results.
"""

from __future__ import annotations

from pipeline.evaluate import gallery, plots, regression_plots, rounds
from pipeline.evaluate.render_html import html_page
from pipeline.evaluate.report import (
    Report,
    agreement_table,
    kwargs_text,
    markdown_table,
    regression_lines,
    regression_table,
    summary_lines,
    sweep_table,
)
from pipeline.run import storage
from pipeline.run.rundir import RunPaths

REPORT_HTML = "report.html"
PLOTS_DIR = "plots"


def figures(report: Report) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, PNG bytes) for every figure the report's data allows."""
    out: dict[str, tuple[str, bytes]] = {}
    if report.curves.get("epoch"):
        what = ("share outside the tolerance" if report.task == "regression"
                else "top-1 disagreement (1 − agreement) with the teacher")
        out["curves"] = ((f"Training curves: distillation loss and {what} per epoch, on log scales (a hollow "
                         "marker on the floor: none at all)."),
                         plots.training_curves(report.curves, report.task))
    if (report.adapt or {}).get("rounds"):
        out["adapt"] = (("Active distillation: the student's held-out figure against labels spent, round by "
                         "round (grey: a uniform run of the same config)."), rounds.figure(report.adapt))
    if report.task == "regression":
        return out | regression_plots.figures(report)
    if any(report.per_class_agreement.values()) and report.classes:
        out["per_class"] = ("Disagreement (1 − top-1 agreement) within each of the teacher's classes.",
                            plots.per_class_disagreement(report.per_class_agreement, report.classes))
    if report.reliability:
        out["reliability"] = (("Reliability diagrams: how often a prediction made with a given confidence is "
                              "right (against true labels, left) or agrees with the teacher (right)."),
                              plots.reliability(report.reliability, report.calibration))
    split = next((s for s in ("heldout", "train") if report.confusion.get(s)), None)
    if split and report.classes:
        out["confusion"] = ((f"Student against teacher on the {split} shards: which class the student picks "
                            "instead of the teacher's."), plots.confusion(report.confusion[split], report.classes, split))
    if report.sweep and report.sweep.get("trials"):
        teacher_ms = (report.latency or {}).get("teacher", {}).get("batch1_ms")
        out["sweep"] = (("Capacity sweep: agreement against student size and CPU latency; the star marks the "
                        "smallest student reaching the target."),
                        plots.sweep(report.sweep, report.params.get("teacher"), teacher_ms))
    return out


def _rounds_lines(report: Report) -> list[str]:
    if not (report.adapt or {}).get("rounds"):
        return []
    return ["## Active distillation", "", markdown_table(rounds.table(report.adapt)), ""]


def markdown(report: Report, figure_captions: dict[str, str] | None = None,
             thumbnails: list[bytes | None] | None = None) -> str:
    t, s = report.teacher, report.student
    if report.task == "regression":
        lines = ["# Surrogate report", "",
                 (f"Simulator `{t.get('arch')}` (version {t.get('version')}, fingerprint `{str(t.get('fingerprint'))[:12]}`); "
                 f"student `{s.get('arch')}` {kwargs_text(s)}, trained {s.get('epochs')} epochs."), "",
                 "## Relative error", "", markdown_table(regression_table(report)), "",
                 *[f"- {line}" for line in regression_lines(report)], "", *_rounds_lines(report)]
        for name, caption in (figure_captions or {}).items():
            lines += [f"![{caption}]({PLOTS_DIR}/{name}.png)", ""]
        return "\n".join(lines)
    lines = [
        "# Distillation report", "",
        (f"Teacher `{t.get('kind', 'torch')} {t.get('arch') or ''}` (fingerprint `{str(t.get('fingerprint'))[:12]}`, dataset {t.get('dataset')}); "
        f"student `{s.get('arch')}` {kwargs_text(s)}, trained {s.get('epochs')} epochs."), "",
        "## Student–teacher agreement", "", markdown_table(agreement_table(report)), "",
        *[f"- {line}" for line in summary_lines(report)], "",
    ]
    lines += _rounds_lines(report)
    lines += gallery.markdown_lines(report, gallery.thumbnails(report) if thumbnails is None else thumbnails, PLOTS_DIR)
    if report.sweep and report.sweep.get("trials"):
        lines += ["## Capacity sweep", "", markdown_table(sweep_table(report.sweep)), ""]
    for name, caption in (figure_captions or {}).items():
        lines += [f"![{caption}]({PLOTS_DIR}/{name}.png)", ""]
    return "\n".join(lines)


def write_report(paths: RunPaths, report: Report) -> None:
    """report.json first (the contract), then the figures and the gallery's thumbnails, report.md and
    the self-contained report.html."""
    storage.write_json_atomic(paths.report_json, report.to_dict())
    figs = figures(report)
    for name, (_, png) in figs.items():
        storage.write_bytes_atomic(storage.join(paths.root, PLOTS_DIR, f"{name}.png"), png)
    thumbs = gallery.thumbnails(report)
    for number, png in enumerate(thumbs, 1):
        if png is not None:
            storage.write_bytes_atomic(storage.join(paths.root, PLOTS_DIR, gallery.thumbnail_name(number)), png)
    captions = {n: c for n, (c, _) in figs.items()}
    storage.write_bytes_atomic(paths.report_md, markdown(report, captions, thumbs).encode())
    storage.write_bytes_atomic(storage.join(paths.root, REPORT_HTML), html_page(report, figs, thumbs).encode())
