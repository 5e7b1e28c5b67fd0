"""Proposing new inputs around the rows a student copies worst.

Images (uint8 pixels, as shards store them):
- warp: the worst row under a small random affine warp (the generator's own, pipeline.inputs.images,
  at `warp` times data's ranges) plus Gaussian pixel noise: the neighbourhood of a hard input;
- mixup: a blend of the worst row with its nearest worst row (pixel L2) of another teacher class,
  weight uniform in [0.2, 0.8]: inputs on the path across the boundary the student gets wrong.
Vectors (float32 parameter values): a scrambled Sobol cloud around each worst point, half-width
`spread` of each side of the box (in the box's unit coordinates, log-scaled parameters on their log
scale), clipped to the box.
Fields: each worst field plus a random field of every channel's own length scale, at `spread`
times the channel's amplitude.

Both shrink by adapt.shrink each round, so later rounds look closer. A proposal is a pure function
of (the scored rows, the adapt config, the round, the seed); the loop stores it before labeling, so
a killed round is labeled again from the same inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.config import AdaptConfig, DataConfig
from pipeline.inputs.images import augment
from pipeline.inputs.vectors import Box
from pipeline.inputs.space import KINDS

WARP, MIXUP, CLOUD, LEAST_SURE = "warp", "mixup", "sobol-cloud", "least-sure"  # proposal kinds (provenance)
FIELD_CLOUD = "field-perturbation"
PROPOSAL_KINDS = (WARP, MIXUP, CLOUD, LEAST_SURE, FIELD_CLOUD)
# The shard's `kind` column keeps the schema's vocabulary: warps are augmented views, clouds Sobol
# points; a least-sure candidate keeps the kind the generator made it as (pipeline.adapt.candidates).
SHARD_KIND = {WARP: KINDS.index("augment"), MIXUP: KINDS.index("mixup"), CLOUD: KINDS.index("sobol"),
              FIELD_CLOUD: KINDS.index("perturbed-field")}


@dataclass
class Proposal:
    """A round's new inputs, with where each came from."""

    inputs: np.ndarray  # as shards store them
    kind: np.ndarray  # int8 index into PROPOSAL_KINDS
    source: np.ndarray  # int64 sample id of the worst row it was made around
    partner: np.ndarray  # int64 sample id of the other row of a mixup, else -1
    made: np.ndarray  # int8 index into the shard schema's KINDS: the shard's `kind` column

    def take(self, start: int, stop: int) -> Proposal:
        return Proposal(*(getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: list[Proposal]) -> Proposal:
        return Proposal(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Proposal)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def scale_of(adapt: AdaptConfig, round_: int) -> float:
    """How far proposals reach in `round_` (1, 2, ...), relative to round 1."""
    return adapt.shrink ** (round_ - 1)


def propose_images(worst: np.ndarray, sample_ids: np.ndarray, classes: np.ndarray, count: int, adapt: AdaptConfig,
                   data: DataConfig, round_: int, seed: int) -> Proposal:
    """`count` images around the `worst` stored images [n, C, H, W] (worst first; `classes`: the
    teacher's top class of each), each used about count / n times."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(worst)
    source = np.arange(count) % n  # every worst row in turn, so each gets its share
    x = torch.from_numpy(worst[source]).float().div_(255)
    mixup = rng.random(count) < adapt.mixup_share
    partner = np.full(count, -1, np.int64)
    flat = worst.reshape(n, -1).astype(np.float32)
    # Candidates for the nearest worst row of another teacher class: all of them, or a sample of 4096.
    pick = np.arange(n) if n <= 4096 else np.sort(rng.choice(n, 4096, replace=False))
    others = classes[:, None] != classes[pick][None, :]
    if mixup.any() and others.any():
        squares = (flat * flat).sum(1)
        d = squares[:, None] + squares[pick][None, :] - 2 * flat @ flat[pick].T  # squared pixel distances
        nearest = pick[np.where(others, d, np.inf).argmin(1)]
        has = others.any(1)
        rows = np.nonzero(mixup & has[source])[0]
        partner[rows] = nearest[source[rows]]
        w = torch.from_numpy(rng.uniform(0.2, 0.8, len(rows))).float().view(-1, 1, 1, 1)
        x[rows] = w * x[rows] + (1 - w) * torch.from_numpy(worst[partner[rows]]).float().div_(255)
    mixed = partner >= 0
    s = scale_of(adapt, round_) * adapt.warp
    small = dataclasses.replace(
        data, rotation_deg=data.rotation_deg * s, shear_deg=data.shear_deg * s, translate=data.translate * s,
        scale_min=1 - (1 - data.scale_min) * s, scale_max=1 + (data.scale_max - 1) * s)
    warp = torch.from_numpy(~mixed)
    if warp.any():
        x[warp] = augment(x[warp], g, small)
    pixels = x.mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()
    kind = np.where(mixed, PROPOSAL_KINDS.index(MIXUP), PROPOSAL_KINDS.index(WARP)).astype(np.int8)
    made = np.where(mixed, SHARD_KIND[MIXUP], SHARD_KIND[WARP]).astype(np.int8)
    return Proposal(pixels, kind, sample_ids[source], np.where(mixed, sample_ids[np.maximum(partner, 0)], -1), made)


def to_unit(box: Box, x: np.ndarray) -> np.ndarray:
    """Physical values [n, D] -> the unit cube (the inverse of Box.from_unit)."""
    lo, hi = box._edges()
    log = np.asarray(box.log)
    v = np.where(log, np.log(np.where(log, np.maximum(x, 1e-300), 1.0)), x)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0)


def propose_vectors(worst: np.ndarray, sample_ids: np.ndarray, count: int, adapt: AdaptConfig, box: Box,
                    round_: int, seed: int) -> Proposal:
    """`count` points in Sobol clouds around the `worst` points [n, D] (worst first)."""
    from scipy.stats import qmc

    n, dim = worst.shape
    per = -(-count // n)
    unit = np.random.default_rng(seed)
    cloud = qmc.Sobol(dim, scramble=True, seed=unit).random(2 ** int(np.ceil(np.log2(max(per, 1)))))[:per]
    half = adapt.spread * scale_of(adapt, round_)
    # Each worst point gets the same cloud under its own random shift (Cranley-Patterson), so the
    # clouds are balanced yet not copies of each other.
    shift = unit.random((n, 1, dim))
    offsets = ((cloud[None] + shift) % 1.0) * 2 - 1  # [n, per, D] in [-1, 1]
    centres = to_unit(box, worst.astype(np.float64))
    points = np.clip(centres[:, None, :] + half * offsets, 0.0, 1.0).reshape(-1, dim)
    source = np.repeat(np.arange(n), per)
    order = np.argsort(np.tile(np.arange(per), n), kind="stable")[:count]  # round-robin: all sources first
    return Proposal(box.from_unit(points[order]), np.full(count, PROPOSAL_KINDS.index(CLOUD), np.int8),
                    sample_ids[source[order]], np.full(count, -1, np.int64), np.full(count, SHARD_KIND[CLOUD], np.int8))


def propose_fields(worst: np.ndarray, sample_ids: np.ndarray, count: int, adapt: AdaptConfig, specs,
                   grid: tuple[int, ...], dtype: str, round_: int, seed: int) -> Proposal:
    """`count` fields around the `worst` stored fields [n, C * prod(grid)] (worst first): each a worst
    field plus a random field of every channel's length scale at `spread` times its amplitude
    (shrinking by round), dealt round-robin so every worst field gets its share."""
    import dataclasses as dc

    from pipeline.inputs.random_fields import perturb_fields

    base = worst.reshape(len(worst), len(specs), *grid).astype(np.float32)
    reach = adapt.spread * scale_of(adapt, round_)
    smaller = tuple(dc.replace(s, amplitude=s.amplitude * reach) for s in specs)
    fields, source = perturb_fields(base, smaller, seed, count, round_, dtype=np.dtype(dtype))
    return Proposal(fields.reshape(count, -1), np.full(count, PROPOSAL_KINDS.index(FIELD_CLOUD), np.int8),
                    sample_ids[source], np.full(count, -1, np.int64), np.full(count, SHARD_KIND[FIELD_CLOUD], np.int8))
