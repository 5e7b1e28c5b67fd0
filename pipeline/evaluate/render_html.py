"""report.html: one self-contained page (figures embedded as base64 PNG, styles inline) that a
person opens in a browser, mails, or attaches to a ticket without the run directory beside it."""

from __future__ import annotations

import base64
from html import escape

from pipeline.evaluate import gallery, rounds
from pipeline.evaluate.report import (
    Report,
    agreement_table,
    gate_line,
    kwargs_text,
    latency_lines,
    regression_lines,
    regression_table,
    summary_lines,
    sweep_table,
)
from pipeline.tasks.metrics import METRICS, top_confusions

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


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _gate(report: Report) -> str:
    if report.gate_passed is None:
        return '<p class="muted">No promotion gate set (<code>--min-agreement</code>).</p>'
    cls, word = ("passed", "PASSED") if report.gate_passed else ("failed", "FAILED")
    if report.task == "regression":
        return f'<p><span class="gate {cls}">Promotion gate {word}</span> {escape(gate_line(report) or "")}</p>'
    top1 = report.agreement.get("heldout", {}).get("top1")
    measured = "no held-out shards" if top1 is None else f"held-out top-1 agreement {top1:.4f}"
    return (f'<p><span class="gate {cls}">Promotion gate {word}</span> {escape(measured)} '
            f"against a bar of {report.min_agreement}.</p>")


def _per_class_table(report: Report) -> str:
    splits = [s for s, v in report.per_class_agreement.items() if v]
    if not splits or not report.classes:
        return ""
    rows = [["class", *splits]]
    for i, name in enumerate(report.classes):
        rows.append([name, *("–" if report.per_class_agreement[s][i] is None else f"{report.per_class_agreement[s][i]:.4f}"
                             for s in splits)])
    return "<h2>Agreement per class</h2>" + _table(rows)


def _confusions(report: Report) -> str:
    pairs = top_confusions(report.confusion.get("heldout"), report.classes, limit=8)
    if not pairs:
        return ""
    rows = [["teacher's class", "student's class", "held-out inputs"]]
    rows += [[p["teacher"], p["student"], f"{p['count']:,}"] for p in pairs]
    return "<h2>Most frequent disagreements</h2>" + _table(rows)


def _definitions() -> str:
    items = "".join(f"<li><code>{escape(k.name)}</code>: {escape(k.description)}</li>" for k in METRICS.values())
    return f'<h2>Definitions</h2><ul class="muted">{items}</ul>'


def _rounds(report: Report) -> str:
    """Active distillation: the rounds' table and the proposed inputs (its curve is among the figures)."""
    if not (report.adapt or {}).get("rounds"):
        return ""
    return "<h2>Active distillation</h2>" + _table(rounds.table(report.adapt)) + rounds.gallery_html(report.adapt)


def regression_page(report: Report, figs: dict[str, tuple[str, bytes]]) -> str:
    t, s = report.teacher, report.student
    intro = (f"Simulator <code>{escape(str(t.get('arch')))}</code> (version {escape(str(t.get('version')))}, "
             f"fingerprint <code>{escape(str(t.get('fingerprint'))[:12])}</code>); student "
             f"<code>{escape(str(s.get('arch')))}</code> {escape(kwargs_text(s))} "
             f"({report.params.get('student', 0):,} parameters), trained {s.get('epochs')} epochs.")
    lines = "".join(f"<li>{escape(line)}</li>" for line in regression_lines(report) if not line.startswith("promotion"))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Surrogate report</title>",
        f"<style>{STYLE}{gallery.STYLE}</style></head><body>",
        "<h1>Surrogate report</h1>", f"<p>{intro}</p>", _gate(report),
        "<h2>Relative error</h2>", _table(regression_table(report)), f"<ul>{lines}</ul>", _rounds(report),
        *[_figure(caption, png) for caption, png in figs.values()],
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def html_page(report: Report, figs: dict[str, tuple[str, bytes]], thumbnails: list[bytes | None] | None = None) -> str:
    """The page; `thumbnails` are the gallery's (drawn here when not given)."""
    if report.task == "regression":
        return regression_page(report, figs)
    t, s = report.teacher, report.student
    teacher_params = report.params.get("teacher")
    size = f"{teacher_params:,} parameters, " if teacher_params else ""
    shape = (f"width {s.get('width')}, depth {s.get('depth')}" if s.get("width") is not None
             else escape(kwargs_text(s)))
    intro = (f"Teacher <code>{escape(str(t.get('kind', 'torch')))} {escape(str(t.get('arch') or ''))}</code> ({size}"
             f"fingerprint <code>{escape(str(t.get('fingerprint'))[:12])}</code>, dataset {escape(str(t.get('dataset')))}); "
             f"student <code>{escape(str(s.get('arch')))}</code> {shape} "
             f"({report.params.get('student', 0):,} parameters), trained {s.get('epochs')} epochs.")
    summary = "".join(f"<li>{escape(line)}</li>" for line in summary_lines(report) if not line.startswith("promotion"))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Distillation report</title>",
        f"<style>{STYLE}{gallery.STYLE}</style></head><body>",
        "<h1>Distillation report</h1>", f"<p>{intro}</p>", _gate(report),
        "<h2>Student–teacher agreement</h2>", _table(agreement_table(report)), f"<ul>{summary}</ul>",
        gallery.html_section(report, gallery.thumbnails(report) if thumbnails is None else thumbnails),
        _rounds(report),
    ]
    if latency_lines(report):
        lat = report.latency
        rows = [["model", "batch 1", "batch 256"]]
        for who in ("teacher", "student"):
            rows.append([who, f"{lat[who]['batch1_ms']:.3f} ms", f"{lat[who]['batch256_ms']:.3f} ms"])
        rows.append(["speed-up", f"{lat['speedup']['batch1']:.1f}x", f"{lat['speedup']['batch256']:.1f}x"])
        parts += ["<h2>CPU latency</h2>", _table(rows),
                  f"<p class='muted'>{lat['threads']} torch thread(s); {escape(lat.get('method', ''))}.</p>"]
    parts += [_figure(caption, png) for name, (caption, png) in figs.items() if name != "sweep"]
    parts += [_per_class_table(report), _confusions(report)]
    if report.sweep and report.sweep.get("trials"):
        parts += ["<h2>Capacity sweep</h2>", _table(sweep_table(report.sweep))]
        if "sweep" in figs:
            parts.append(_figure(*figs["sweep"]))
    parts += [_definitions(), "</body></html>"]
    return "\n".join(p for p in parts if p)
