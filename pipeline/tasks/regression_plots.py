"""The figures of a surrogate's report, drawn from report.json's regression details."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from pipeline.tasks.plotting import STUDENT_COLOR, TEACHER_COLOR, _png


def predicted_vs_true(details: dict) -> bytes:
    """Every output value of a sample of held-out rows: the student's against the simulator's."""
    t, s = np.asarray(details["scatter"]["teacher"]), np.asarray(details["scatter"]["student"])
    fig = Figure(figsize=(4.6, 4.4))
    ax = fig.subplots()
    ax.scatter(t, s, s=4, alpha=0.4, color=STUDENT_COLOR)
    if len(t):
        lo, hi = float(min(t.min(), s.min())), float(max(t.max(), s.max()))
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    ax.set_xlabel("simulator")
    ax.set_ylabel("student")
    ax.set_title("held-out outputs: student against simulator")
    ax.grid(alpha=0.3)
    return _png(fig)


def error_histogram(details: dict, tolerance: float | None) -> bytes:
    """Per-sample relative L2 error on the held-out shards, log-spaced bins."""
    edges, counts = np.asarray(details["histogram"]["edges"]), np.asarray(details["histogram"]["counts"])
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.subplots()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=TEACHER_COLOR, edgecolor="white")
    ax.set_xscale("log")
    if tolerance:
        ax.axvline(tolerance, color="black", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g}")
        ax.legend()
    ax.set_xlabel("relative L2 error ‖student − simulator‖ / ‖simulator‖")
    ax.set_ylabel("held-out samples")
    ax.grid(alpha=0.3)
    return _png(fig)


def worst_samples(details: dict) -> bytes:
    """The held-out samples with the largest errors: the simulator's output and the student's."""
    worst = details["worst"]
    fig = Figure(figsize=(3.2 * max(1, len(worst)), 3.2))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(worst))))
    for ax, w in zip(axes, worst):
        ax.plot(w["teacher"], color=TEACHER_COLOR, label="simulator")
        ax.plot(w["student"], "--", color=STUDENT_COLOR, label="student")
        ax.set_title(f"error {w['error']:.2e}\n" + ", ".join(f"{k}={v:.3g}" for k, v in w["input"].items()),
                     fontsize=8)
        ax.set_xlabel("output index")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def error_heatmap(details: dict) -> bytes:
    """Mean held-out relative error over a grid of two parameters (log colour scale)."""
    h = details["heatmap"]
    grid = np.array([[np.nan if v is None else v for v in row] for row in h["mean_error"]], dtype=float)
    fig = Figure(figsize=(5.4, 4.4))
    ax = fig.subplots()
    finite = grid[np.isfinite(grid) & (grid > 0)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size and finite.max() > finite.min() else None
    mesh = ax.pcolormesh(h["x_edges"], h["y_edges"], np.ma.masked_invalid(grid), norm=norm, cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="mean relative L2 error")
    ax.set_xlabel(h["x"])
    ax.set_ylabel(h["y"])
    ax.set_title("held-out error over two parameters")
    return _png(fig)


def figures(report) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, PNG) for a regression report."""
    details = (report.regression or {}).get("details") or {}
    out: dict[str, tuple[str, bytes]] = {}
    if details.get("scatter"):
        out["predicted_vs_true"] = (("Held-out outputs: the student's values against the simulator's (the line is "
                                    "student = simulator)."), predicted_vs_true(details))
    if details.get("histogram"):
        out["error_histogram"] = ("Per-sample relative L2 error on the held-out shards.",
                                  error_histogram(details, report.regression.get("tolerance")))
    if details.get("worst"):
        out["worst"] = ("The held-out samples with the largest errors, simulator and student side by side.",
                        worst_samples(details))
    if details.get("heatmap"):
        out["heatmap"] = (("Where in the parameter box the error sits: the mean held-out error on a grid of two "
                          "parameters."), error_heatmap(details))
    from pipeline.tasks import field_plots

    return out | field_plots.figures(report.regression or {})


def sweep(sweep: dict) -> bytes:
    """The held-out relative error at the sweep's quantile against student size, one point per student."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    q = sweep.get("quantile", "p95")
    trials = sorted(sweep["trials"], key=lambda t: t["params"])
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for split, style, color in (("train", "--o", TEACHER_COLOR), ("heldout", "-o", STUDENT_COLOR)):
        points = [(t["params"], (t["rel_l2"][split] or {}).get(q)) for t in trials]
        points = [(p, v) for p, v in points if v is not None and v > 0]
        ax.plot([p for p, _ in points], [v for _, v in points], style, color=color, label=f"{split} {q}")
    if sweep.get("target") is not None:
        ax.axhline(sweep["target"], color="grey", linestyle=":", label=f"bar {sweep['target']:g}")
    smallest = sweep.get("smallest")
    if smallest is not None and (smallest["rel_l2"]["heldout"] or {}).get(q):
        ax.plot([smallest["params"]], [smallest["rel_l2"]["heldout"][q]], "*", color="black", markersize=14,
                label=f"smallest within the bar: {smallest['name']}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ax.has_data():
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("student parameters (log scale)")
    ax.set_ylabel(f"relative L2 error {q}")
    ax.set_title("capacity sweep: error vs size")
    ax.grid(alpha=0.3, which="both")
    return _png(fig)
