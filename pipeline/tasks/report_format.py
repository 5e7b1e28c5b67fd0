"""Formatting shared by every task's report section: numbers, tables for the terminal, markdown and
HTML, and the gate's line. Plain functions of plain data: a report is drawn from report.json alone."""

from __future__ import annotations

from html import escape


def fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def sci(value) -> str:
    return "–" if value is None else f"{value:.3e}"


def ms(value) -> str:
    return "–" if value is None else f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def faster(speedup: float) -> str:
    """"4.9x faster", or "1.7x slower" for a student slower than its teacher."""
    return f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.1f}x slower"


def kwargs_text(student: dict) -> str:
    """A student's factory arguments, in a stable order (report.json is written with sorted keys)."""
    kwargs = student.get("kwargs") or {}
    return ", ".join(f"{k}={kwargs[k]}" for k in sorted(kwargs))


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bullets_html(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>" if lines else ""
