"""Evaluating a regression student (a simulator's surrogate): errors, speed, and what the plots show.

On the training and held-out shards: per-sample relative L2 error (median, p95, p99, max), the
largest absolute error, R² per output and the fraction within task.tolerance (pipeline.tasks.regression).
Speed: the simulator's samples/s as measured while labeling (its own time inside its calls, and the
labeling stage's wall clock over all actors), against the student's on this machine's CPU at batch
1 (one thread) and 1024 (all threads); the speed-up at 1024 is student over simulator, all cores each.
The figures' data (a sample of predicted-vs-true points, the error histogram, the worst held-out
samples, the error over two parameters) go into report.json, so the report can be redrawn from it.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from pipeline import shards
from pipeline.evaluate import latency
from pipeline.evaluate.field_details import FieldDetails
from pipeline.inputs import space
from students.losses import relative_error

SCATTER_POINTS = 2000  # predicted-vs-true values kept for the plot
WORST = 4  # held-out samples drawn as curves
HEATMAP_BINS = 12
HISTOGRAM_BINS = 40


@torch.inference_mode()
def heldout_details(student: torch.nn.Module, split_dir: str, manifest: shards.Manifest, batch_size: int,
                    parameter_names: list[str], heatmap: tuple[int, int] = (0, 1)) -> dict:
    """One pass over the held-out rows for the figures: worst samples, a scatter sample, the error
    histogram, and the mean error on a grid over two parameters; for field targets, the worst
    samples as fields and the error's spectrum (pipeline/evaluate/field_details.py) instead of the
    worst samples and the grid over parameters, which a field does not have."""
    # Field targets: their own figures, fed by this same pass; no per-row inputs or parameter grid.
    fields = FieldDetails(manifest) if manifest.target_shape else None
    decode = space.decode_module(manifest.input_space, manifest.input_shape, manifest.parameters)
    inputs, errors, worst, scatter = [], [], [], []
    rng = np.random.default_rng(0)
    for batch in shards.iter_batches(split_dir, manifest, batch_size):
        x, y = batch["input"], batch[manifest.target_column].float()
        pred = student(decode(x))
        err = relative_error(pred.double(), y.double()).numpy()
        errors.append(err)
        if fields is not None:
            fields.update(x, y, pred, err)
        else:
            inputs.append(x.numpy())
            for i in np.argsort(-err)[:WORST]:
                worst.append((float(err[i]), x[i].tolist(), y[i].tolist(), pred[i].tolist()))
            worst = sorted(worst, key=lambda w: -w[0])[:WORST]
        take = rng.random(len(y)) < SCATTER_POINTS / max(manifest.rows * y.shape[1], 1)
        scatter += [(t, p) for t, p in zip(y[take].flatten().tolist(), pred[take].flatten().tolist())]
    if not errors:
        return {}
    e = np.concatenate(errors)
    positive = np.maximum(e, 1e-12)
    edges = np.logspace(np.log10(positive.min()), np.log10(positive.max()) + 1e-9, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(positive, edges)
    details = {
        "scatter": {"teacher": [s[0] for s in scatter[:SCATTER_POINTS]], "student": [s[1] for s in scatter[:SCATTER_POINTS]]},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }
    if fields is not None:
        return details | fields.result()
    details["worst"] = [{"error": w, "input": dict(zip(parameter_names, xi)), "teacher": t, "student": p}
                        for w, xi, t, p in worst]
    x = np.concatenate(inputs)
    if x.shape[1] >= 2:
        a, b = heatmap
        grid = np.full((HEATMAP_BINS, HEATMAP_BINS), np.nan)
        ea = np.linspace(x[:, a].min(), x[:, a].max() + 1e-12, HEATMAP_BINS + 1)
        eb = np.linspace(x[:, b].min(), x[:, b].max() + 1e-12, HEATMAP_BINS + 1)
        ia = np.clip(np.digitize(x[:, a], ea) - 1, 0, HEATMAP_BINS - 1)
        ib = np.clip(np.digitize(x[:, b], eb) - 1, 0, HEATMAP_BINS - 1)
        sums = np.zeros_like(grid)
        counts2 = np.zeros_like(grid)
        np.add.at(sums, (ib, ia), e)
        np.add.at(counts2, (ib, ia), 1)
        grid = np.where(counts2 > 0, sums / np.maximum(counts2, 1), np.nan)
        details["heatmap"] = {"x": parameter_names[a], "y": parameter_names[b], "x_edges": ea.tolist(),
                              "y_edges": eb.tolist(), "mean_error": [[None if np.isnan(v) else float(v) for v in row]
                                                                     for row in grid]}
    return details


def teacher_speed(manifests: list[shards.Manifest]) -> dict:
    """The teacher's throughput while it labeled: per actor (its own time inside its calls) and over
    the whole stage (rows over the labeling wall clock, every actor together)."""
    rows = sum(r.rows + r.rejected for m in manifests for r in m.shards.values())
    inside = sum(r.teacher_seconds for m in manifests for r in m.shards.values())
    wall = sum(m.label_seconds for m in manifests)
    return {"samples_per_s_per_actor": rows / inside if inside else None,
            "samples_per_s": rows / wall if wall else None, "rows": rows, "label_wall_s": wall}


def student_speed(student: torch.nn.Module, decode: torch.nn.Module, input_shape, min_time_s: float) -> dict:
    """The student on CPU, stored inputs in, physical values out: batch 1 on one thread, batches 256
    and 1024 on every core (256 is the usual yardstick for field surrogates, whose inputs are large)."""
    model = torch.nn.Sequential(decode, student).eval()
    one = latency.forward_ms(model, input_shape, 1, 1, min_time_s)["ms"]
    cores = os.cpu_count() or 1
    mid = latency.forward_ms(model, input_shape, 256, cores, min_time_s)["ms"]
    many = latency.forward_ms(model, input_shape, 1024, cores, min_time_s)["ms"]
    return {"batch1_ms": one, "batch256_ms": mid, "batch1024_ms": many, "samples_per_s_batch1": 1e3 / one,
            "samples_per_s_batch256": 256e3 / mid, "samples_per_s_batch1024": 1024e3 / many,
            "threads_batch1024": cores}


