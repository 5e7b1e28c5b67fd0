"""Gaussian random fields on 1-D and 2-D grids: the generator of the "fields" input space.

Kernel. Each channel is a stationary, isotropic Gaussian field of pointwise mean `mean` with a
Matérn covariance of smoothness nu (`smoothness`, e.g. 1.5 or 2.5) or, for smoothness None, the
squared exponential k(r) = amplitude² exp(-r² / 2 length_scale²). Lengths are fractions of the
domain's side: the domain is the unit interval or square whatever the grid. With random_mean False
the constant Fourier mode is left out (the generators of the FNO and PDEBench benchmarks set it to
the mean): a periodic field's average over the domain is then exactly `mean`, and `amplitude` is the
spread of the fluctuation about it.

Synthesis. A field is a Fourier series on a periodic box of side L: L = 1 for a periodic channel;
L = 2 for a non-periodic one, of which only [0, 1)^d is kept, so its ends lie a whole domain apart
on the circle and do not wrap into each other. Mode m (an integer vector) has weight S(2π|m| / L),
S the kernel's spectral density; the modes kept are those of weight at least 1e-6 of the largest,
up to MAX_CYCLES cycles per unit length per dimension: they follow from the spec alone, never from
the grid. Each gets a standard complex normal coefficient times the square root of its weight, the
weights normalised to sum to amplitude², so the pointwise variance is exactly amplitude². The
covariance is the kernel summed over its periodic images (close to the kernel for length scales
well below L), truncated to those modes (a channel finer than the cap comes out smoother).

Resolution. Each grid point takes the series' exact value: modes above the grid's Nyquist frequency
are folded onto their aliases before the inverse FFT, which changes nothing at the grid's points.
So a row drawn at N = 64 and at N = 256 agrees at their shared points to rounding, whatever the
length scale; a grid too coarse for the finest modes gets exact but aliased samples (right values,
too far apart to show the field's shape), not truncated ones (which would change values and
variance). Periodic grids take x_j = j / N, non-periodic ones cell centres (j + 0.5) / N (shared by
two grids when one size is an odd multiple of the other).

Seeding. Channel c of row r draws from np.random.default_rng([FIELD_STREAM, seed, shard_index, r, c]),
perturb_fields's base row from [BASE_STREAM, seed, shard_index, r]: a row depends only on (specs, seed,
shard index, row), never on the shard's size or other rows, nor a channel on the other channels' specs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.errors import UserError

THRESHOLD = 1e-6
MAX_CYCLES = {1: 1024, 2: 64}  # per unit length: at most ~6k (periodic) or ~26k modes per 2-D field
FIELD_STREAM, BASE_STREAM = 0x46494C44, 0x42415345  # keep these streams apart from other modules' [seed, ...]
_BATCH_POINTS = 1 << 22  # FFT points per batch (two rows to an FFT): 64 MiB of complex spectrum


@dataclass(frozen=True)
class ChannelSpec:
    """One channel's field: see the module docstring for what each value means."""

    length_scale: float = 0.1
    amplitude: float = 1.0
    mean: float = 0.0
    periodic: bool = True
    smoothness: float | None = 2.5
    random_mean: bool = True


KEYS = tuple(f.name for f in dataclasses.fields(ChannelSpec))


def _number(c: int, key: str, value, positive: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(value) or (positive and value <= 0):
        raise UserError(f"channel {c}: {key} is {value!r}; expected a {'positive' if positive else 'finite'} number.")
    return float(value)


def channel_specs(dicts) -> tuple[ChannelSpec, ...]:
    """Checked ChannelSpecs from one mapping per channel (missing keys take ChannelSpec's defaults)."""
    if isinstance(dicts, (str, bytes, Mapping)) or not hasattr(dicts, "__iter__") or not list(dicts):
        raise UserError(f"field channels are {dicts!r}; expected a list with one mapping per channel.")
    specs = []
    for c, d in enumerate(dicts):
        d = dataclasses.asdict(d) if isinstance(d, ChannelSpec) else d
        if not isinstance(d, Mapping):
            raise UserError(f"channel {c} is {d!r}; expected a mapping of {', '.join(KEYS)}.")
        unknown = sorted(set(map(str, d)) - set(KEYS))
        if unknown:
            raise UserError(f"channel {c}: unknown key {unknown[0]!r}; expected some of {', '.join(KEYS)}.")
        d = {**dataclasses.asdict(ChannelSpec()), **d}
        for flag in ("periodic", "random_mean"):
            if not isinstance(d[flag], (bool, np.bool_)):
                raise UserError(f"channel {c}: {flag} is {d[flag]!r}; expected true or false.")
        periodic = d["periodic"]
        nu = d["smoothness"]
        specs.append(ChannelSpec(
            length_scale=_number(c, "length_scale", d["length_scale"], positive=True),
            amplitude=_number(c, "amplitude", d["amplitude"], positive=True),
            mean=_number(c, "mean", d["mean"], positive=False), periodic=bool(periodic),
            smoothness=None if nu is None else _number(c, "smoothness", nu, positive=True),
            random_mean=bool(d["random_mean"])))
    return tuple(specs)


@functools.lru_cache(maxsize=64)  # callers must not write to the arrays: they are shared
def modes(spec: ChannelSpec, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """The channel's modes (int [n, ndim], one of each ±m pair) and their coefficients' scales."""
    side = 1.0 if spec.periodic else 2.0
    ls, log_t = spec.length_scale, math.log(THRESHOLD)
    if spec.smoothness is None:
        reach = math.sqrt(-2 * log_t) / ls  # exp(-w² ls² / 2) = THRESHOLD
        log_s = lambda w: -0.5 * (w * ls) ** 2  # noqa: E731
    else:
        nu, power = spec.smoothness, spec.smoothness + ndim / 2
        reach = math.sqrt(2 * nu * math.expm1(-log_t / power)) / ls  # (1 + w² ls² / 2nu)^-power = THRESHOLD
        log_s = lambda w: -power * np.log1p((w * ls) ** 2 / (2 * nu))  # noqa: E731
    radius = min(reach * side / (2 * math.pi), MAX_CYCLES[ndim] * side)
    k = int(math.floor(radius))
    axis = np.arange(-k, k + 1)
    m = np.stack(np.meshgrid(*[axis] * ndim, indexing="ij"), -1).reshape(-1, ndim)
    # A real field needs only one of m and -m (the other is its complex conjugate): keep the one
    # whose first non-zero component is positive, and give it both halves' weight.
    sign = np.zeros(len(m), np.int64)
    for j in reversed(range(ndim)):
        sign = np.where(m[:, j] != 0, np.sign(m[:, j]), sign)
    m = m[(sign >= 0) & ((m ** 2).sum(1) <= radius ** 2 * (1 + 1e-12))]
    if not spec.random_mean:  # the constant mode's coefficient is `mean` itself, as in the FNO's generator
        m = m[(m != 0).any(1)]
    weight = np.exp(log_s(2 * math.pi * np.sqrt((m ** 2).sum(1)) / side))
    weight[(m != 0).any(1)] *= 2
    scale = spec.amplitude * np.sqrt(weight / weight.sum())
    return m, scale


def _groups(m: np.ndarray, size: tuple[int, ...]) -> tuple:
    """Modes m folded onto the FFT's indices (m mod size), in groups of distinct indices (one per
    wrap count), so each group adds into the spectrum without two modes colliding."""
    wrap = np.floor_divide(m, size)
    target = np.ravel_multi_index(tuple((m - wrap * size).T), size)
    _, group = np.unique(wrap, axis=0, return_inverse=True)
    group = group.ravel()
    if group.max() == 0:  # nothing folds (the grid resolves every mode): no gathering needed
        return ((slice(None), target),)
    return tuple((pos, target[pos]) for pos in (np.flatnonzero(group == g) for g in range(group.max() + 1)))


@functools.lru_cache(maxsize=64)
def _plan(spec: ChannelSpec, grid: tuple[int, ...]):
    """How the modes land on the grid's FFT: per-mode complex factors, the FFT's size, and the
    index groups of the modes m and of their mirror images -m."""
    m, scale = modes(spec, len(grid))
    size = tuple(n * (1 if spec.periodic else 2) for n in grid)
    offset = 0.0 if spec.periodic else 0.5  # cell centres: half a grid step in from the domain's edge
    phase = np.exp(2j * np.pi * (m * (offset / np.array(size))).sum(1))
    return scale * phase / 2, size, _groups(m, size), _groups(-m, size)


def _synthesise(spec: ChannelSpec, grid: tuple[int, ...], seed: int, shard_index: int, start: int, stop: int,
                channel: int) -> np.ndarray:
    """The zero-mean field of `channel` for rows start..stop-1 (start even), float64 [stop - start, *grid]."""
    (factor, size, plus, minus), count = _plan(spec, grid), stop - start
    # A row's field Re(sum_m u_m e^{ikx}) is the inverse FFT of the Hermitian spectrum u_m / 2 at m,
    # conj(u_m) / 2 at -m; so rows 2k and 2k + 1 share one complex FFT as its real and imaginary part.
    # The pairs are fixed (a partner is drawn even past `stop`): rounding is the same whatever the count.
    pairs = (count + 1) // 2
    u = np.empty((pairs, 2, len(factor)), np.complex128)
    for i in range(2 * pairs):
        rng = np.random.default_rng([FIELD_STREAM, seed, shard_index, start + i, channel])
        u[i // 2, i % 2] = rng.standard_normal(2 * len(factor)).view(np.complex128)
    u *= factor  # the halves of the Hermitian spectrum are already in `factor`
    # In place: a <- a + ib (goes to m), b <- conj(a) + i conj(b) (goes to -m).
    re_a, im_a, re_b, im_b = u[:, 0].real, u[:, 0].imag, u[:, 1].real, u[:, 1].imag
    re_b[...], im_b[...], re_a[...], im_a[...] = re_a + im_b, re_b - im_a, re_a - im_b, im_a + re_b
    spectrum = np.zeros((pairs, math.prod(size)), np.complex128)
    for groups, half in ((plus, u[:, 0]), (minus, u[:, 1])):
        for pos, target in groups:
            spectrum[:, target] += half[:, pos]
    out = spectrum.reshape(pairs, *size)
    if spec.periodic:  # norm="forward": the series' plain sum, no 1/size factor
        out = np.fft.ifftn(out, axes=range(1, out.ndim), norm="forward")
    else:  # one axis at a time, keeping the first N points after each: the second half is never needed
        for axis, keep in zip(range(1, out.ndim), grid):
            out = np.fft.ifft(out, axis=axis, norm="forward")[(slice(None),) * axis + (slice(keep),)]
    return np.stack([out.real, out.imag], axis=1).reshape(2 * pairs, *grid)[:count]


def _check_args(grid, seed, count, shard_index) -> tuple:
    grid = tuple(int(n) for n in grid)
    if len(grid) not in (1, 2) or min(grid) < 1:
        raise UserError(f"field grid {grid} is not supported; expected [N] or [H, W] with positive sizes.")
    for name, value in (("seed", seed), ("count", count), ("shard index", shard_index)):
        if int(value) < 0:  # SeedSequence takes non-negative integers only
            raise UserError(f"field {name} is {value}; expected a non-negative integer.")
    return grid, int(seed), int(count), int(shard_index)


def _fill(specs, grid, seed, count, shard_index, out, base=None, base_index=None) -> None:
    for c, spec in enumerate(specs):
        batch = 2 * max(1, _BATCH_POINTS // math.prod(_plan(spec, grid)[1]))  # even: rows stay in their pairs
        for start in range(0, count, batch):
            stop = min(count, start + batch)
            values = _synthesise(spec, grid, seed, shard_index, start, stop, c)
            values += spec.mean if base is None else base[base_index[start:stop], c]
            out[start:stop, c] = values


def sample_fields(specs, grid: tuple[int, ...], seed: int, count: int, shard_index: int,
                  dtype=np.float32) -> np.ndarray:
    """`count` fields [count, C, *grid]: rows 0..count-1 of the shard's stream."""
    specs = channel_specs(specs)
    grid, seed, count, shard_index = _check_args(grid, seed, count, shard_index)
    out = np.empty((count, len(specs), *grid), dtype=dtype)
    _fill(specs, grid, seed, count, shard_index, out)
    return out


def perturb_fields(base: np.ndarray, specs, seed: int, count: int, shard_index: int,
                   dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """`count` fields, each one of the user's arrays base [M, C, *grid] plus a zero-mean random field
    drawn with `specs` (their means ignored), and which base row each came from (int64 [count])."""
    specs = channel_specs(specs)
    base = np.asarray(base)
    if base.ndim not in (3, 4) or base.shape[0] < 1 or base.shape[1] != len(specs):
        raise UserError(f"base arrays of shape {base.shape} do not fit {len(specs)} channel(s); "
                        f"expected [M >= 1, {len(specs)}, *grid] on a 1-D or 2-D grid.")
    grid, seed, count, shard_index = _check_args(base.shape[2:], seed, count, shard_index)
    index = np.array([np.random.default_rng([BASE_STREAM, seed, shard_index, r]).integers(len(base))
                      for r in range(count)], dtype=np.int64)
    out = np.empty((count, len(specs), *grid), dtype=dtype)
    _fill(specs, grid, seed, count, shard_index, out, base.astype(np.float64, copy=False), index)
    return out, index
