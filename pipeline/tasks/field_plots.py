"""The figures of a surrogate of fields, drawn from report.json: the worst held-out samples as whole
fields (input, solver, student, error: lines on a 1-D grid, images on a 2-D one, first channel), the
error's spectrum beside the solver's, and where on the grid the error sits."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pipeline.tasks.plotting import HELDOUT_COLOR, STUDENT_COLOR, TEACHER_COLOR, _png


def worst_fields(fields: dict) -> bytes:
    worst = fields["worst"]
    two_d = len(fields["target_shape"]) == 3
    columns = ("input", "solver", "student", "error")
    fig = Figure(figsize=(11, 2.3 * len(worst)))
    axes = np.atleast_2d(fig.subplots(len(worst), 4 if two_d else 2))
    for row, w in zip(axes, worst):
        x, t, s = (np.asarray(w[k])[0] for k in ("input", "teacher", "student"))  # first channel
        if two_d:
            low, high = float(min(t.min(), s.min())), float(max(t.max(), s.max()))
            for ax, title, image in zip(row, columns, (x, t, s, s - t)):
                shown = ax.imshow(image, origin="lower", cmap="RdBu_r" if title == "error" else "viridis",
                                  vmin=None if title in ("input", "error") else low,
                                  vmax=None if title in ("input", "error") else high)
                fig.colorbar(shown, ax=ax, fraction=0.046)
                ax.set_title(f"{title}" + (f" (rel. L2 {w['error']:.2e})" if title == "student" else ""), fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
        else:
            grid_in, grid_out = np.linspace(0, 1, len(x), endpoint=False), np.linspace(0, 1, len(t), endpoint=False)
            row[0].plot(grid_in, x, color=HELDOUT_COLOR)
            row[0].set_title("input", fontsize=8)
            row[1].plot(grid_out, t, color=TEACHER_COLOR, label="solver")
            row[1].plot(grid_out, s, "--", color=STUDENT_COLOR, label="student")
            twin = row[1].twinx()
            twin.plot(grid_out, s - t, color="0.5", linewidth=0.8)
            twin.set_ylabel("error", fontsize=8, color="0.4")
            row[1].set_title(f"output (rel. L2 {w['error']:.2e}; grey: student − solver)", fontsize=8)
            row[1].legend(fontsize=7, loc="upper left")
            for ax in row:
                ax.grid(alpha=0.3)
    return _png(fig)


def spectrum(fields: dict) -> bytes:
    sp = fields["spectrum"]
    k = np.asarray(sp["wavenumber"])
    fig = Figure(figsize=(5.4, 3.8))
    ax = fig.subplots()
    for key, colour, label in (("solver", TEACHER_COLOR, "solver's output"), ("error", STUDENT_COLOR, "student − solver")):
        power = np.asarray(sp[key], dtype=float)
        keep = (k > 0) & (power > 0)
        ax.loglog(k[keep], power[keep], color=colour, label=label)
    ax.set_xlabel("wavenumber |k|")
    ax.set_ylabel("mean power")
    ax.set_title("held-out spectra: where in scale the error sits")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def error_by_position(values: dict) -> bytes:
    rmse = np.asarray(values["rmse_by_position"], dtype=float)[0]  # first channel
    fig = Figure(figsize=(5.4, 3.8))
    ax = fig.subplots()
    if rmse.ndim == 1:
        ax.plot(np.linspace(0, 1, len(rmse), endpoint=False), rmse, color=STUDENT_COLOR)
        ax.set_xlabel("position")
        ax.set_ylabel("RMSE over held-out samples")
        ax.grid(alpha=0.3)
    else:
        shown = ax.imshow(rmse, origin="lower", cmap="magma")
        fig.colorbar(shown, ax=ax, label="RMSE over held-out samples")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("where on the grid the held-out error sits")
    return _png(fig)


def figures(regression: dict) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, PNG) for the field parts of a regression report."""
    fields = (regression.get("details") or {}).get("fields")
    if not fields:
        return {}
    out = {"worst_fields": ("The held-out samples with the largest errors, as fields (first channel).",
                            worst_fields(fields)),
           "spectrum": ("Mean power per wavenumber of the solver's held-out outputs and of the student's error.",
                        spectrum(fields))}
    heldout = regression.get("heldout") or {}
    if heldout.get("rmse_by_position"):
        out["error_by_position"] = ("Root mean squared held-out error at each grid position (first channel).",
                                    error_by_position(heldout))
    return out
