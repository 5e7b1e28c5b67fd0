"""What every report figure shares: PNG bytes from a matplotlib figure, percentages on log axes, the
colours, and the training curves (every task has them; the task names its per-epoch figure).

matplotlib's object API with the Agg canvas: no pyplot, no global figure state, no display needed,
so plotting works on a headless node and from several threads.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # never try to open a window, whatever the environment says

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

DPI = 110
TEACHER_COLOR, STUDENT_COLOR, HELDOUT_COLOR = "#1f77b4", "#d62728", "#2ca02c"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def percent(value: float) -> str:
    """A share as a percentage with the digits a small one needs: 12%, 1.5%, 0.25%, 0.031%."""
    if value == 0:
        return "0%"
    digits = max(0, min(3, 1 - math.floor(math.log10(abs(value) * 100))))
    return f"{value * 100:.{digits}f}%"


def _log_percent_axis(ax) -> None:
    # Ticks at 1-2-5 steps written as percentages: a range narrower than a decade still gets ticks.
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: percent(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def training_curves(curves: dict, what: str = "top-1 disagreement (1 − agreement)") -> bytes:
    """Loss and `what` (1 - the logged per-epoch agreement figure) per epoch, training and held-out, both on log scales: a
    student's last percent of disagreement, invisible on a 0..1 axis, is where it still improves.
    An epoch with no disagreement at all is drawn as a hollow marker on the axis's floor."""
    fig = Figure(figsize=(9, 3.6))
    loss_ax, gap_ax = fig.subplots(1, 2)
    epochs = curves.get("epoch", [])
    series = (("train", "training shards", "-o"), ("val", "held-out shards", "--s"))
    colors = (TEACHER_COLOR, HELDOUT_COLOR)
    for (split, label, style), color in zip(series, colors):
        points = [(e, v) for e, v in zip(epochs, curves.get(f"{split}/loss") or []) if v is not None]
        loss_ax.plot([p[0] for p in points], [p[1] for p in points], style, color=color, label=label, markersize=4)
    losses = [v for split, _, _ in series for v in curves.get(f"{split}/loss") or [] if v is not None]
    if losses and min(losses) > 0:
        loss_ax.set_yscale("log")
        loss_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        loss_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        loss_ax.yaxis.set_minor_formatter(NullFormatter())
    gaps = {split: [(e, 1.0 - v) for e, v in zip(epochs, curves.get(f"{split}/agreement") or []) if v is not None]
            for split, _, _ in series}
    positive = [g for points in gaps.values() for _, g in points if g > 0]
    floor = min(positive) / 3 if positive else 1e-3
    for (split, label, style), color in zip(series, colors):
        points = gaps[split]
        if not points:
            continue
        gap_ax.plot([e for e, _ in points], [max(g, floor) for _, g in points], style, color=color, markersize=4,
                    label=f"{label} (last {percent(points[-1][1])})")
        zeros = [e for e, g in points if g <= 0]
        gap_ax.plot(zeros, [floor] * len(zeros), "o", color=color, markerfacecolor="white", markersize=7)
    for ax, title in ((loss_ax, "distillation loss"), (gap_ax, what)):
        ax.set_title(title + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        if ax.has_data():
            ax.legend(fontsize=8)
    if positive:
        _log_percent_axis(gap_ax)
        gap_ax.set_ylim(floor / 1.5, min(1.0, max(positive) * 1.5))
    return _png(fig)


