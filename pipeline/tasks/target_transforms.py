"""Choosing how a regression's targets are transformed before they are standardised for training.

A surrogate is scored by the relative L2 error of each sample, ‖student − solver‖ / ‖solver‖. When
the samples' scales span decades (a dose, a rate or a strike moves the whole output by orders of
magnitude), a loss on standardised raw values is dominated by the largest samples and leaves the
small ones with large relative errors; on log values every sample weighs by its relative error.
`task.target_transform auto` (the default) reads the training targets and chooses:

  log     every target is >= 0 and the samples' scales (each sample's largest |value|) span at
          least SPAN_DECADES decades between their 1st and 99th percentiles; the floor is
          FLOOR_FRACTION of the 1st percentile of those scales, far below any sample's own scale
  asinh   the targets cross zero and the samples' scales span that much: a signed log, linear
          within ±scale (scale chosen as the log's floor)
  none    otherwise (scales within a few orders of one another: standardising is enough)

Field targets [C', *grid] with several channels choose per channel (`choose_per_channel`), each
from its own values: a pressure spanning decades takes a log beside a velocity that keeps its values.

The choice, its parameter and the reason are recorded in the student's card and said in the
output and the report; the student still takes physical parameters and returns physical values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

SPAN_DECADES = 2.0  # sample scales spanning at least this many decades (p1 to p99) call for a log
FLOOR_FRACTION = 1e-3  # the log's floor (asinh's linear range) against the smallest samples' scale
SAMPLE_ROWS = 262_144  # rows of the training targets read to choose (the choice needs quantiles, not every row)


@dataclass(frozen=True)
class TargetTransform:
    name: str  # students.scale.TRANSFORMS
    value: float  # log: the floor; asinh: the linear range; none: unused (1.0)
    reason: str  # why, in one phrase, from the data



def transform_words(name: str, value: float) -> str:
    """A transform and its parameter in words: "log, floor 1e-06", "asinh, linear within ±0.01"."""
    return name + {"log": f", floor {value:.3g}", "asinh": f", linear within ±{value:.3g}"}.get(name, "")


def sample_targets(batches: Iterable[dict], rows: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to `rows` rows of the training targets [n, K], float64, in reading order."""
    kept, count = [], 0
    for batch in batches:
        y = batch["targets"].double().numpy()
        kept.append(y[: rows - count])
        count += len(kept[-1])
        if count >= rows:
            break
    return np.concatenate(kept) if kept else np.zeros((0, 1))


def choose(requested: str, targets: np.ndarray) -> TargetTransform:
    """The transform for these training targets [n, K]: `requested`, or (auto) the one the data calls for."""
    finite = targets[np.isfinite(targets).all(axis=1)] if targets.size else targets
    scales = np.abs(finite).max(axis=1) if finite.size else np.zeros(0)
    positive = scales[scales > 0]
    low, high = (np.percentile(positive, [1, 99]) if positive.size else (1.0, 1.0))
    decades = float(np.log10(high / low)) if low > 0 else 0.0
    floor = float(max(FLOOR_FRACTION * low, np.finfo(np.float32).tiny)) if low > 0 else 1e-12
    signed = bool(finite.size and finite.min() < 0)
    span = f"the samples' scales span {decades:.1f} decades, p1 {low:.3g} to p99 {high:.3g}"
    if requested == "none":
        return TargetTransform("none", 1.0, "asked for")
    if requested == "log":
        if signed:
            raise ValueError(f"task.target_transform log needs targets >= 0, but the training targets reach "
                             f"{finite.min():.3g}: use asinh (a signed log) or auto.")
        return TargetTransform("log", floor, f"asked for; {span}")
    if requested == "asinh":
        return TargetTransform("asinh", floor, f"asked for; {span}")
    if decades < SPAN_DECADES:
        return TargetTransform("none", 1.0, f"chosen: {span}, fewer than {SPAN_DECADES:g}")
    if signed:
        return TargetTransform("asinh", floor, f"chosen: the targets cross zero and {span}")
    return TargetTransform("log", floor, f"chosen: the targets are >= 0 and {span}")


def choose_per_channel(requested: str, targets: np.ndarray, channels: int) -> list[TargetTransform]:
    """One transform per output channel of targets [n, C' * P] (channel c: columns c*P .. (c+1)*P - 1),
    each chosen from that channel's values alone; a reason names its channel when there are several."""
    if channels <= 1:
        return [choose(requested, targets)]
    parts = targets.reshape(len(targets), channels, -1)
    chosen = []
    for c in range(channels):
        try:
            t = choose(requested, parts[:, c])
        except ValueError as exc:
            raise ValueError(f"output channel {c}: {exc}") from None
        chosen.append(TargetTransform(t.name, t.value, f"channel {c}: {t.reason}"))
    return chosen
