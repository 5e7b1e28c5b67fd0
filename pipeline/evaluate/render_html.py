"""report.html: one self-contained page (figures embedded as base64 PNG, styles inline) that a
person opens in a browser, mails, or attaches to a ticket without the run directory beside it.
The page's frame, gate, gallery and rounds are drawn here; the task's section by its report module."""

from __future__ import annotations

import base64
from html import escape

from pipeline.evaluate import gallery, rounds
from pipeline.evaluate.report import Report
from pipeline.inputs import get_space
from pipeline.tasks.report_format import html_table

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.gate { display: inline-block; padding: 0.3em 0.8em; border-radius: 4px; font-weight: bold; }
.passed { background: #d8f0d8; color: #155215; } .failed { background: #f6d5d5; color: #7a1010; }
.muted { color: #666; font-size: 0.9em; } code { background: #f3f3f3; padding: 0 0.2em; }
"""


def figure_html(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _gate(report: Report) -> str:
    if report.gate_passed is None:
        option = report.task_object.bar_option()
        return f'<p class="muted">No promotion gate set (<code>{escape(option)}</code>).</p>'
    cls, word = ("passed", "PASSED") if report.gate_passed else ("failed", "FAILED")
    return f'<p><span class="gate {cls}">Promotion gate {word}</span> {report.task_object.render().gate_html(report)}</p>'


def _rounds(report: Report) -> str:
    """Active distillation: the rounds' table and the proposed inputs (its curve is among the figures)."""
    if not (report.adapt or {}).get("rounds"):
        return ""
    return ("<h2>Active distillation</h2>" + html_table(rounds.table(report.adapt, report.task_object))
            + rounds.gallery_html(report.adapt, get_space(report.input_space)))


def html_page(report: Report, figs: dict[str, tuple[str, bytes]], thumbnails: list[bytes | None] | None = None) -> str:
    """The page; `thumbnails` are the gallery's (drawn here when not given)."""
    section = report.task_object.render()
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(section.TITLE)}</title>",
        f"<style>{STYLE}{gallery.STYLE}</style></head><body>",
        f"<h1>{escape(section.TITLE)}</h1>", f"<p>{section.intro_html(report)}</p>", _gate(report),
        *section.html_head(report),
        gallery.html_section(report, gallery.thumbnails(report) if thumbnails is None else thumbnails),
        _rounds(report),
        *section.html_tail(report, figs, figure_html),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
