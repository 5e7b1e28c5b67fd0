"""The vector input space: points of a box of named parameters (a simulator's inputs).

Generation (`sampler`)
  sobol   scrambled Sobol points (scipy.stats.qmc), the default: low discrepancy, so a table of n
          points covers the box far more evenly than n random ones
  lhs     Latin hypercube: every parameter's range cut into n strata, each hit once
  grid    the full grid of `grid_points` values per parameter, dealt to shards in order: the
          "complete dataset" case, for spaces small enough to enumerate
Each shard's points are a pure function of (space, seed, shard index): the sampler is seeded from
them, so a rerun, a retried task or another machine makes the same points.

Storage: float32 [D], the physical values the simulator was called with.
Decoding: each parameter mapped to [-1, 1] over its range (its logarithm for a log-scale one), so
the student sees inputs of one scale whatever the units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.inputs.space import KINDS

NAME = "vectors"
STORED_DTYPE = np.float32
SAMPLERS = ("sobol", "lhs", "grid")


@dataclass(frozen=True)
class Box:
    """The parameter box: names, bounds and which parameters vary on a log scale."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    log: tuple[bool, ...]

    @property
    def dim(self) -> int:
        return len(self.names)

    def _edges(self) -> tuple[np.ndarray, np.ndarray]:
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        log = np.asarray(self.log)
        return np.where(log, np.log(np.where(log, low, 1.0)), low), np.where(log, np.log(np.where(log, high, 1.0)), high)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Points of the unit cube [0, 1]^D -> physical values (float32 [n, D])."""
        lo, hi = self._edges()
        x = lo + u * (hi - lo)
        x = np.where(np.asarray(self.log), np.exp(x), x)
        return np.clip(x, self.low, self.high).astype(np.float32)


def box_of(parameters) -> Box:
    """The Box of data.parameters (ParameterConfig entries)."""
    return Box(tuple(p.name for p in parameters), tuple(float(p.low) for p in parameters),
               tuple(float(p.high) for p in parameters), tuple(bool(p.log) for p in parameters))


def box_of_dicts(parameters: list[dict]) -> Box:
    """The Box of parameters as recorded in a manifest or card ({name, low, high, log})."""
    return Box(tuple(p["name"] for p in parameters), tuple(float(p["low"]) for p in parameters),
               tuple(float(p["high"]) for p in parameters), tuple(bool(p.get("log", False)) for p in parameters))


def box_dicts(box: Box) -> list[dict]:
    return [{"name": n, "low": lo, "high": hi, "log": lg} for n, lo, hi, lg in zip(box.names, box.low, box.high, box.log)]


def generate_vectors(box: Box, sampler: str, seed: int, count: int, shard_index: int,
                     grid_points: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A shard's points (float32 [n, D]) and their kinds (int8 indices into the schema's KINDS)."""

    points = sample_points(box, sampler, seed, count, shard_index, grid_points)
    return points, np.full(len(points), KINDS.index(sampler), dtype=np.int8)


def _scipy_seed(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


def sample_points(box: Box, sampler: str, seed: int, count: int, shard_index: int = 0,
                  grid_points: int = 0) -> np.ndarray:
    """`count` points of the box as float32 [count, D]."""
    from scipy.stats import qmc

    if sampler == "grid":
        return grid_slice(box, grid_points, shard_index * count, count)
    if sampler == "sobol":
        engine = qmc.Sobol(box.dim, scramble=True, seed=_scipy_seed(seed))
        # Sobol's balance properties hold for powers of two; draw the next one and keep `count`.
        unit = engine.random(2 ** max(0, math.ceil(math.log2(max(count, 1)))))[:count]
    elif sampler == "lhs":
        unit = qmc.LatinHypercube(box.dim, seed=_scipy_seed(seed)).random(count)
    else:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of: {', '.join(SAMPLERS)}")
    return box.from_unit(unit)


def grid_size(box: Box, grid_points: int) -> int:
    return grid_points ** box.dim


def grid_slice(box: Box, grid_points: int, start: int, count: int) -> np.ndarray:
    """Rows [start, start + count) of the full grid (cell centres of `grid_points` per parameter,
    so no point sits on the box's edge twice), in C order; fewer at the grid's end."""
    stop = min(start + count, grid_size(box, grid_points))
    index = np.arange(start, max(start, stop))
    digits = np.stack(np.unravel_index(index, (grid_points,) * box.dim), axis=1) if len(index) else np.zeros((0, box.dim))
    return box.from_unit((digits + 0.5) / grid_points)


def decode_numpy(stored: np.ndarray) -> np.ndarray:
    """A simulator takes the physical values as stored."""
    return np.asarray(stored, dtype=np.float32)


class BoxScale(torch.nn.Module):
    """Physical values -> [-1, 1] per parameter (log for log-scale ones): the student's first layer,
    kept in its exported file so the file takes physical values."""

    def __init__(self, box: Box):
        super().__init__()
        lo, hi = box._edges()
        self.register_buffer("log_mask", torch.tensor(box.log, dtype=torch.bool))
        self.register_buffer("low", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(hi - lo, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = torch.where(self.log_mask, torch.log(x.clamp_min(1e-30)), x)
        return 2 * (x - self.low) / self.span - 1
