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

from pipeline.evaluate.gallery import thumbnail  # noqa: E402
from pipeline.evaluate.plots import _png  # noqa: E402
from pipeline.evaluate.worst import decode_input  # noqa: E402


def _value(split: dict, regression: bool) -> float:
    return split["p99"] if regression else 1 - split["top1"]


def figure(adapt: dict) -> bytes:
    """Held-out (and training) disagreement, or p99 relative L2 error, against labels spent."""
    rounds = adapt["rounds"]
    regression = "p99" in rounds[0]["heldout"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    labels = [r["labels"] for r in rounds]
    for split, style in (("heldout", "o-"), ("train", "s--")):
        ax.plot(labels, [max(_value(r[split], regression), 1e-6) for r in rounds], style, label=f"adaptive, {split}")
    for r in rounds:
        ax.annotate(f"round {r['round']}", (r["labels"], max(_value(r["heldout"], regression), 1e-6)),
                    textcoords="offset points", xytext=(4, 6), fontsize=8)
    uniform = adapt.get("uniform")
    if uniform:
        ax.plot([rounds[0]["labels"], uniform["labels"]],
                [max(_value(rounds[0]["heldout"], regression), 1e-6), max(_value(uniform["heldout"], regression), 1e-6)],
                "x:", color="grey", label="uniform, held-out")
    ax.set_yscale("log")
    ax.set_xlabel("labels spent (training rows)")
    ax.set_ylabel("held-out p99 relative L2 error" if regression else "disagreement (1 − top-1 agreement)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def table(adapt: dict) -> list[list[str]]:
    rounds = adapt["rounds"]
    regression = "p99" in rounds[0]["heldout"]
    name = "p99 relative L2" if regression else "top-1 agreement"
    rows = [["round", "shards", "labels", f"held-out {name}", f"train {name}"]]
    key = "p99" if regression else "top1"
    for r in rounds:
        rows.append([str(r["round"]), str(r["shards"]), f"{r['labels']:,}", f"{r['heldout'][key]:.4g}",
                     f"{r['train'][key]:.4g}"])
    if adapt.get("uniform"):
        u = adapt["uniform"]
        rows.append(["uniform run", "", f"{u['labels']:,}", f"{u['heldout'][key]:.4g}", f"{u['train'][key]:.4g}"])
    return rows


def gallery_html(adapt: dict) -> str:
    cards = []
    for p in adapt.get("gallery") or []:
        x = decode_input(p.get("input"))
        if x is None:
            continue
        src = base64.b64encode(thumbnail(x)).decode()
        partner = f" + {p['partner']}" if p.get("partner", -1) >= 0 else ""
        cards.append(f"<div class='card'><img src='data:image/png;base64,{src}'><div class='muted'>"
                     f"round {p['round']}, {escape(p['kind'])} of {p['source']}{partner}</div></div>")
    if not cards:
        return ""
    return ("<p class='muted'>Proposed inputs (by source sample id; a mixup names both rows).</p>"
            f"<div class='gallery'>{''.join(cards)}</div>")
