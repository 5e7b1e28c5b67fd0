"""The report's section on active distillation (pipeline/adapt/): the student's held-out figure
against labels spent, round by round (beside a uniform run of the same config when the run names
one, adapt.compare), and a gallery of proposed inputs. Drawn from report.json's `adapt` entry, a
copy of DIR/adapt/rounds.json that the eval stage reads as plain data."""

from __future__ import annotations

import base64
from html import escape

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.tasks.plotting import _png  # noqa: E402
from pipeline.inputs.space import InputSpace  # noqa: E402
from pipeline.tasks.task import Task  # noqa: E402
from pipeline.tasks.worst import decode_input  # noqa: E402


def figure(adapt: dict, task: Task) -> bytes:
    """The task's held-out (and training) error figure (disagreement, p99 relative L2 error, ...)
    against labels spent."""
    rounds = adapt["rounds"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    labels = [r["labels"] for r in rounds]
    for split, style in (("heldout", "o-"), ("train", "s--")):
        ax.plot(labels, [max(task.round_error(r[split]), 1e-6) for r in rounds], style, label=f"adaptive, {split}")
    for r in rounds:
        ax.annotate(f"round {r['round']}", (r["labels"], max(task.round_error(r["heldout"]), 1e-6)),
                    textcoords="offset points", xytext=(4, 6), fontsize=8)
    uniform = adapt.get("uniform")
    if uniform:
        ax.plot([rounds[0]["labels"], uniform["labels"]],
                [max(task.round_error(rounds[0]["heldout"]), 1e-6), max(task.round_error(uniform["heldout"]), 1e-6)],
                "x:", color="grey", label="uniform, held-out")
    ax.set_yscale("log")
    ax.set_xlabel("labels spent (training rows)")
    ax.set_ylabel(task.round_ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def table(adapt: dict, task: Task) -> list[list[str]]:
    rounds = adapt["rounds"]
    name, key = task.round_column
    rows = [["round", "shards", "labels", f"held-out {name}", f"train {name}"]]
    for r in rounds:
        rows.append([str(r["round"]), str(r["shards"]), f"{r['labels']:,}", f"{r['heldout'][key]:.4g}",
                     f"{r['train'][key]:.4g}"])
    if adapt.get("uniform"):
        u = adapt["uniform"]
        rows.append(["uniform run", "", f"{u['labels']:,}", f"{u['heldout'][key]:.4g}", f"{u['train'][key]:.4g}"])
    return rows


def gallery_html(adapt: dict, space: InputSpace) -> str:
    """The proposed inputs as the run's input space draws them (none where it shows inputs as values)."""
    cards = []
    for p in adapt.get("gallery") or []:
        x = decode_input(p.get("input"))
        png = None if x is None else space.thumbnail(x)
        if png is None:
            continue
        src = base64.b64encode(png).decode()
        partner = f" + {p['partner']}" if p.get("partner", -1) >= 0 else ""
        cards.append(f"<div class='card'><img src='data:image/png;base64,{src}'><div class='muted'>"
                     f"round {p['round']}, {escape(p['kind'])} of {p['source']}{partner}</div></div>")
    if not cards:
        return ""
    return ("<p class='muted'>Proposed inputs (by source sample id; a mixup names both rows).</p>"
            f"<div class='gallery'>{''.join(cards)}</div>")
