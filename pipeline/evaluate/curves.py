"""Training curves from the CSV logs Lightning writes in DIR/student/logs/version_*/metrics.csv.

Lightning writes one row per logging call, each with only some columns filled (epoch-level
metrics, validation metrics and step-level metrics land on different rows). This folds them into
one value per epoch and metric. A training resumed from a checkpoint logs into a new version
folder; later versions win for the epochs they repeat.
"""

from __future__ import annotations

import csv
import io
import re

import pyarrow.fs as pafs

from pipeline.run import storage

# The epoch-level series the report plots, as logged by students.DistillationModule.
SERIES = ("train/loss", "train/agreement", "val/loss", "val/agreement")


def _versions(logs_dir: str) -> list[str]:
    fs, p = storage.resolve(logs_dir)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    found = []
    for info in fs.get_file_info(pafs.FileSelector(p)):
        match = re.fullmatch(r"version_(\d+)", info.base_name)
        if match and info.type == pafs.FileType.Directory:
            found.append((int(match.group(1)), info.base_name))
    return [storage.join(logs_dir, name, "metrics.csv") for _, name in sorted(found)]


def parse_metrics_csv(text: str, series=SERIES) -> dict[int, dict[str, float]]:
    """{epoch: {metric: value}} from one metrics.csv (the last value logged for an epoch wins)."""
    epochs: dict[int, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        if not row.get("epoch"):
            continue
        values = {k: float(row[k]) for k in series if row.get(k)}
        if values:
            epochs.setdefault(int(float(row["epoch"])), {}).update(values)
    return epochs


def read_curves(student_dir: str) -> dict:
    """{"epoch": [0, 1, ...], "train/loss": [...], ...}: one value per epoch (None where not logged);
    empty when there are no logs (a student trained elsewhere)."""
    epochs: dict[int, dict[str, float]] = {}
    for path in _versions(storage.join(student_dir, "logs")):
        if storage.exists(path):
            for epoch, values in parse_metrics_csv(storage.read_bytes(path).decode()).items():
                epochs.setdefault(epoch, {}).update(values)
    if not epochs:
        return {}
    order = sorted(epochs)
    curves = {"epoch": order}
    for name in SERIES:
        if any(name in epochs[e] for e in order):
            curves[name] = [epochs[e].get(name) for e in order]
    return curves
