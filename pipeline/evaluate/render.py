"""Drawing a report: the PNG figures in DIR/plots/, report.md and the self-contained report.html.

Everything is drawn from the Report alone (report.json), so a report can be redrawn at any time,
as the sweep does when it adds its results. What is the same for every run (the training curves,
active rounds, the gallery of worst rows) is drawn here; the task's own section by its report
module (`report.task_object.render()`).
"""

from __future__ import annotations

from pipeline.evaluate import gallery, rounds
from pipeline.evaluate.render_html import html_page
from pipeline.evaluate.report import Report
from pipeline.run import storage
from pipeline.run.rundir import RunPaths
from pipeline.tasks import plotting
from pipeline.tasks.report_format import markdown_table

REPORT_HTML = "report.html"
PLOTS_DIR = "plots"


def figures(report: Report) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, PNG bytes) for every figure the report's data allows."""
    task = report.task_object
    out: dict[str, tuple[str, bytes]] = {}
    if report.curves.get("epoch"):
        what = task.curve_words
        out["curves"] = ((f"Training curves: distillation loss and {what} per epoch, on log scales (a hollow "
                         "marker on the floor: none at all)."),
                         plotting.training_curves(report.curves, what))
    if (report.adapt or {}).get("rounds"):
        out["adapt"] = (("Active distillation: the student's held-out figure against labels spent, round by "
                         "round (grey: a uniform run of the same config)."), rounds.figure(report.adapt, task))
    return out | task.render().figures(report)


def _rounds_lines(report: Report) -> list[str]:
    if not (report.adapt or {}).get("rounds"):
        return []
    return ["## Active distillation", "", markdown_table(rounds.table(report.adapt, report.task_object)), ""]


def markdown(report: Report, figure_captions: dict[str, str] | None = None,
             thumbnails: list[bytes | None] | None = None) -> str:
    section = report.task_object.render()
    lines = [f"# {section.TITLE}", "", section.intro_markdown(report), "", *section.markdown_lines(report)]
    lines += _rounds_lines(report)
    lines += gallery.markdown_lines(report, gallery.thumbnails(report) if thumbnails is None else thumbnails, PLOTS_DIR)
    if report.sweep and report.sweep.get("trials"):
        lines += ["## Capacity sweep", "", markdown_table(section.sweep_table(report.sweep)), ""]
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
