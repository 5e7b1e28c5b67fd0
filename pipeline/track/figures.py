"""What a run sends a tracker, as plain names and numbers: its config as parameters, report.json's
figures as metrics, its active rounds as series over rounds, and Lightning's CSV curves replayed.

Metric names keep report.json's own path with '/' between keys (`agreement/heldout/top1`,
`regression/heldout/rel_l2/p95`), so a figure is found in a tracker under the name it has in the
report. A list in report.json is a table or a plot's data (curves, confusion, per-bin calibration),
not a figure: lists are left out, except the rounds, which become series with the round as step.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any

import pyarrow.fs as pafs

from pipeline.run import storage

PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value, in characters
ROUNDS = "adapt"  # report.json's section of active rounds, and the prefix of their series
LEFT_OUT = ("curves", "gallery", ROUNDS)  # sent another way (the CSV curves, the rounds) or not figures at all


def flat(data: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mappings flattened to `a.b.c` keys (lists and other values kept as leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        out.update(flat(value, name, sep) if isinstance(value, dict) else {name: value})
    return out


def config_params(fields: dict, out: str) -> dict[str, str]:
    """A run's config (config.yaml's fields) as `section.key` parameters, plus where the run lives."""
    params = {"out": out}
    for key, value in flat(fields).items():
        text = value if isinstance(value, str) else json.dumps(value)
        params[key] = text[:PARAM_LENGTH]
    return params


def metric_name(key: str) -> str:
    """Characters every tracker takes in a metric's name (MLflow's: letters, digits, _ - . / and space)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    return None


def scalars(data: dict, prefix: str = "") -> dict[str, float]:
    """Every number in nested mappings, named by its path ('/'-joined); lists, strings and None left out."""
    out = {}
    for key, value in flat(data, prefix, "/").items():
        number = _number(value)
        if number is not None:
            out[metric_name(key)] = number
    return out


def report_figures(report: dict) -> dict[str, float]:
    """report.json's figures, each under its path in the report."""
    return scalars({k: v for k, v in report.items() if k not in LEFT_OUT})


def round_series(rounds: list[dict]) -> list[tuple[int, dict[str, float]]]:
    """(round, figures) per active round (rounds.json's entries): labels spent, shards, and the round
    student's figures on each split, as `adapt/heldout/top1` at step = the round."""
    return [(int(entry["round"]), scalars({k: v for k, v in entry.items() if k != "round"}, ROUNDS))
            for entry in rounds]


def csv_rows(text: str) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) per row of one Lightning metrics.csv: what Lightning gave every logger, so a run
    trained without a tracker sends the curves a tracker would have received live."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if not row.get("step"):
            continue
        values = {metric_name(k): float(v) for k, v in row.items() if k != "step" and v not in (None, "")}
        if values:
            rows.append((int(float(row["step"])), values))
    return rows


def logged_curves(logs_dir: str) -> list[tuple[int, dict[str, float]]]:
    """Every row of the CSV logs under a student's logs/ (version_0, version_1, ... for a resumed run)."""
    fs, p = storage.resolve(logs_dir)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    versions = sorted((int(m.group(1)), info.base_name) for info in fs.get_file_info(pafs.FileSelector(p))
                      if (m := re.fullmatch(r"version_(\d+)", info.base_name)))
    rows = []
    for _, name in versions:
        path = storage.join(logs_dir, name, "metrics.csv")
        if storage.exists(path):
            rows += csv_rows(storage.read_bytes(path).decode())
    return rows
