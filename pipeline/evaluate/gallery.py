"""The gallery of the worst held-out rows (report.json's `gallery`, kept by pipeline.tasks.worst):
for each row its input, the teacher's and the student's top classes with probabilities, its KL and
where it is stored. This is what a person opens the report to see: what the student gets wrong.

Image inputs are drawn as PNG thumbnails, enlarged by whole pixels so that small images (8x8 digits)
stay sharp; report.html embeds them, report.md links the copies under plots/worst/. Vector inputs
are written out as their parameter values. Everything is drawn from report.json alone.
"""

from __future__ import annotations

import base64
from html import escape

import numpy as np

from pipeline.tasks.worst import decode_input
from pipeline.inputs import get_space

WORST_DIR = "worst"  # under plots/: report.md's copies of the thumbnails

STYLE = """
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: 0.5em; font-size: 0.85em; }
.card.disagrees { border-color: #d62728; }
.card img { display: block; margin: 0 auto 0.4em; width: 112px; image-rendering: pixelated; border: 1px solid #eee; }
.card table { width: 100%; margin: 0.2em 0; font-size: 1em; }
.card td, .card th { padding: 0.1em 0.3em; border: none; border-bottom: 1px solid #eee; }
.card .off { color: #b00; font-weight: bold; }
.card .title { text-align: center; font-size: 1.1em; }
.card td:not(:first-child), .card th:not(:first-child) { text-align: left; }
.card .values { font-family: monospace; font-size: 0.9em; word-break: break-all; }
"""


def rows(report) -> list[dict]:
    return list((report.gallery or {}).get("rows") or [])


def thumbnails(report) -> list[bytes | None]:
    """One PNG per gallery row (None where the space shows inputs as values, or the input was not kept)."""
    kept = rows(report)
    if not kept:
        return []
    space = get_space(report.gallery.get("input_space") or report.input_space)
    return [None if (x := decode_input(r.get("input"))) is None else space.thumbnail(x) for r in kept]


def _name(report, index: int) -> str:
    return report.classes[index] if index < len(report.classes) else str(index)


def _values(report, row: dict) -> str:
    """A non-image input as text: name=value per parameter (or the stored values)."""
    x = decode_input(row.get("input"))
    if x is None:
        return "(input too large to keep)"
    names = (report.gallery or {}).get("parameters") or [str(i) for i in range(x.size)]
    return ", ".join(f"{n}={v:.4g}" for n, v in zip(names, x.reshape(-1).tolist()))


def _where(row: dict) -> str:
    return f"{row['file']} row {row['row']}"


def intro(report) -> str:
    kept = rows(report)
    wrong = sum(not r["agrees"] for r in kept)
    if not wrong:
        return (f"The student agrees with the teacher's top class on every held-out input; these are the {len(kept)} "
                "with the largest KL(teacher‖student).")
    rest = f", then the {len(kept) - wrong} agreeing ones with the largest KL" if wrong < len(kept) else ""
    return (f"The held-out inputs where the student is furthest from the teacher: {wrong} where its top class "
            f"differs from the teacher's, largest KL(teacher‖student) first{rest}.")


def _card(report, row: dict, png: bytes | None, number: int) -> str:
    t, s = row["teacher"], row["student"]
    if png is not None:
        what = f"held-out input {number}: {_where(row)}"
        head = f'<img alt="{escape(what)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    else:
        head = f'<div class="values">{escape(_values(report, row))}</div>'
    lines = []
    for rank in range(max(len(t), len(s))):
        cells = []
        for pairs, model in ((t, "teacher"), (s, "student")):
            if rank >= len(pairs):
                cells.append("<td></td>")
                continue
            index, p = pairs[rank]
            off = model == "student" and rank == 0 and not row["agrees"]
            cells.append(f'<td{" class=off" if off else ""}><b>{escape(_name(report, index))}</b> {p:.1%}</td>')
        lines.append(f"<tr><td>{rank + 1}</td>{''.join(cells)}</tr>")
    verdict = "agrees" if row["agrees"] else "disagrees"
    title = (f'<div class="title">teacher <b>{escape(_name(report, t[0][0]))}</b>, student '
             f'<b{"" if row["agrees"] else " class=off"}>{escape(_name(report, s[0][0]))}</b> ({verdict})</div>')
    table = f"<table><tr><th>rank</th><th>teacher</th><th>student</th></tr>{''.join(lines)}</table>"
    foot = f'<div class="muted">#{number} · KL {row["kl"]:.3g} nats · {escape(_where(row))}</div>'
    cls = "card" if row["agrees"] else "card disagrees"
    return f'<div class="{cls}">{head}{title}{table}{foot}</div>'


def html_section(report, pngs: list[bytes | None]) -> str:
    kept = rows(report)
    if not kept:
        return ""
    cards = "".join(_card(report, r, png, i + 1) for i, (r, png) in enumerate(zip(kept, pngs)))
    return (f"<h2>Worst held-out disagreements</h2><p>{escape(intro(report))}</p>"
            f'<div class="gallery">{cards}</div>')


def _classes_text(report, pairs: list) -> str:
    return ", ".join(f"{_name(report, i)} ({p:.1%})" for i, p in pairs)


def thumbnail_name(number: int) -> str:
    return f"{WORST_DIR}/{number:02d}.png"


def markdown_lines(report, pngs: list[bytes | None], plots_dir: str) -> list[str]:
    """The gallery as a markdown table, thumbnails linked from plots_dir/worst/."""
    kept = rows(report)
    if not kept:
        return []
    lines = ["## Worst held-out disagreements", "", intro(report), "",
             "| # | input | teacher's top classes | student's top classes | KL (nats) | stored at |", "|---|---|---|---|---|---|"]
    for i, (row, png) in enumerate(zip(kept, pngs)):
        shown = f"![input {i + 1}]({plots_dir}/{thumbnail_name(i + 1)})" if png is not None else _values(report, row)
        student = _classes_text(report, row["student"])
        lines.append(f"| {i + 1} | {shown} | {_classes_text(report, row['teacher'])} | "
                     f"{student if row['agrees'] else '**' + student + '**'} | {row['kl']:.3g} | {_where(row)} |")
    return lines + [""]
