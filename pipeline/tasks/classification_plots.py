"""A classification report's figures, as PNG bytes, drawn from the report's own data (so they can be
redrawn from report.json alone): disagreement per class, reliability diagrams, the confusion matrix
and the capacity sweep."""

from __future__ import annotations

import math

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from pipeline.tasks.plotting import HELDOUT_COLOR, STUDENT_COLOR, TEACHER_COLOR, _png, percent


def per_class_disagreement(per_class: dict[str, list], classes: list[str]) -> bytes:
    """Disagreement (1 - top-1 agreement) within each teacher class, one bar per split, on an axis
    from 0 to the largest: at 98-100% agreement the classes differ by a percent or two, which a 0..1
    agreement axis flattens. Each bar's value is written on it while the bars are few enough to read."""
    splits = [s for s, v in per_class.items() if v]
    # Wider with more bars, up to a page's width (beyond that the bars get thinner, not the page wider).
    fig = Figure(figsize=(min(18.0, max(6.0, 0.3 * len(classes) * max(1, len(splits)) + 3)), 3.8))
    ax = fig.subplots()
    width = 0.8 / max(1, len(splits))
    labelled = len(classes) * len(splits) <= 40
    for i, split in enumerate(splits):
        gaps = [None if v is None else 1.0 - v for v in per_class[split]]
        xs = [c + (i - (len(splits) - 1) / 2) * width for c in range(len(classes))]
        bars = ax.bar(xs, [g or 0.0 for g in gaps], width, label=split)
        if labelled:
            ax.bar_label(bars, ["–" if g is None else percent(g) for g in gaps], fontsize=7, rotation=90, padding=2)
    many = len(classes) > 30
    ax.set_xticks(range(len(classes)), classes, rotation=90 if many else 45 if len(classes) > 12 else 0,
                  fontsize=6 if many else None)
    top = max((1.0 - v for s in splits for v in per_class[s] if v is not None), default=0.0) or 0.01
    ax.set_ylim(0, top * (1.35 if labelled else 1.1))  # room for the written values and the legend
    ax.set_yticks([t for t in ax.get_yticks() if t <= 1.0])  # no ticks above 100%
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: percent(v)))
    ax.set_xlabel("teacher's class")
    ax.set_ylabel("disagreement (1 − agreement)")
    ax.set_title("disagreement per class (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    if splits:
        ax.legend(loc="upper right", ncol=len(splits), fontsize=8)
    return _png(fig)


def _reliability_panel(ax, curves: list[tuple[str, dict, float | None, str]], title: str, ylabel: str) -> None:
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for label, bins, ece, color in curves:
        points = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
        if points:
            suffix = f" (ECE {ece:.3f})" if ece is not None else ""
            ax.plot([p[0] for p in points], [p[1] for p in points], "-o", color=color, markersize=4,
                    label=label + suffix)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def reliability(reliability: dict, calibration: dict, agreement_split: str = "heldout") -> bytes:
    """Left: teacher and student against the true labels (real test data). Right: the student's
    confidence against agreeing with the teacher (held-out shards)."""
    fig = Figure(figsize=(9, 4))
    left, right = fig.subplots(1, 2)
    test, test_ece = reliability.get("test", {}), calibration.get("test", {})
    _reliability_panel(left, [(name, test[name], test_ece.get(name), color)
                              for name, color in (("teacher", TEACHER_COLOR), ("student", STUDENT_COLOR))
                              if name in test], "real test data: vs true labels", "accuracy")
    split = agreement_split if reliability.get(agreement_split, {}).get("student_vs_teacher") else "train"
    bins = reliability.get(split, {}).get("student_vs_teacher")
    _reliability_panel(right, [("student", bins, calibration.get(split, {}).get("student_vs_teacher"), HELDOUT_COLOR)]
                       if bins else [], f"{split} shards: student vs teacher", "agreement with the teacher")
    return _png(fig)


def confusion(matrix: list[list[int]], classes: list[str], split: str) -> bytes:
    """Which class the student picks instead of the teacher's: off-diagonal shares of each teacher
    class, coloured; the diagonal (agreement) greyed, with its share written in."""
    k = len(classes)
    fig = Figure(figsize=(min(12, 2 + 0.55 * k), min(11, 1.5 + 0.5 * k)))
    ax = fig.subplots()
    shares = [[n / sum(row) if sum(row) else 0.0 for n in row] for row in matrix]
    off = [[math.nan if i == j else shares[i][j] for j in range(k)] for i in range(k)]
    top = max((v for row in off for v in row if not math.isnan(v)), default=0.0) or 1.0
    image = ax.imshow(off, cmap="Reds", vmin=0, vmax=top)
    ax.imshow([[1.0 if i == j else math.nan for j in range(k)] for i in range(k)], cmap="Greys", vmin=0, vmax=4)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if i == j:
                    ax.text(j, i, f"{shares[i][j]:.0%}", ha="center", va="center", fontsize=7)
                elif matrix[i][j]:
                    ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=7,
                            color="white" if shares[i][j] > top / 2 else "black")
    ax.set_xticks(range(k), classes, rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("student's top class")
    ax.set_ylabel("teacher's top class")
    ax.set_title(f"{split}: where the student disagrees (counts; diagonal: agreement)")
    fig.colorbar(image, ax=ax, label="share of the teacher class", shrink=0.8)
    return _png(fig)


def sweep(sweep: dict, teacher_params: int | None = None, teacher_batch1_ms: float | None = None) -> bytes:
    """Agreement against parameters (log scale) and against batch-1 latency, one point per student."""
    trials = sorted(sweep["trials"], key=lambda t: t["params"])
    target, smallest = sweep.get("target"), sweep.get("smallest")
    fig = Figure(figsize=(10, 4))
    params_ax, latency_ax = fig.subplots(1, 2)
    params = [t["params"] for t in trials]
    for split, style, color in (("train", "--o", TEACHER_COLOR), ("heldout", "-o", HELDOUT_COLOR)):
        params_ax.plot(params, [t["agreement"][split] for t in trials], style, color=color, label=f"{split} top-1")
    latency = [(t["latency"]["batch1_ms"], t["agreement"]["heldout"]) for t in trials if t.get("latency")]
    if latency:
        latency_ax.plot([p[0] for p in latency], [p[1] for p in latency], "o", color=HELDOUT_COLOR,
                        label="heldout top-1")
        for t in trials:
            if t.get("latency"):
                latency_ax.annotate(t["name"], (t["latency"]["batch1_ms"], t["agreement"]["heldout"]), fontsize=7,
                                    xytext=(3, -9), textcoords="offset points")
    for ax in (params_ax, latency_ax):
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", label=f"target {target}")
        ax.set_xscale("log")
        # Ticks at 1-2-5 steps, written plainly (0.05, 0.1, 2000): a narrow log range stays readable.
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("top-1 agreement with the teacher")
        ax.grid(alpha=0.3, which="both")
    if smallest is not None:
        params_ax.plot([smallest["params"]], [smallest["agreement"]["heldout"]], "*", color="black", markersize=14,
                       label=f"smallest at target: {smallest['name']}")
    if teacher_params:
        params_ax.axvline(teacher_params, color=TEACHER_COLOR, alpha=0.5, label="teacher's parameters")
    if teacher_batch1_ms:
        latency_ax.axvline(teacher_batch1_ms, color=TEACHER_COLOR, alpha=0.5, label="teacher's latency")
    params_ax.set_xlabel("student parameters (log scale)")
    params_ax.set_title("capacity sweep: agreement vs size")
    latency_ax.set_xlabel("CPU latency at batch 1, ms (log scale)")
    latency_ax.set_title("agreement vs latency")
    params_ax.legend(fontsize=8, loc="best")
    if latency_ax.has_data():
        latency_ax.legend(fontsize=8, loc="lower right")
    return _png(fig)
