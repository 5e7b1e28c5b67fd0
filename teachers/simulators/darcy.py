"""Steady 2-D Darcy flow: the second benchmark of the Fourier neural operator paper.

    -div(a(x) grad u(x)) = f   on the unit square,   u = 0 on its boundary,   f = 1 by default.

Input [n, 1, H, W]: the log-permeability g at the centres of an H x W grid of cells; a = exp(g), or with
`threshold` set, a = 12 where g >= threshold and 3 elsewhere (the paper's piecewise-constant coefficient).
Output [n, 1, H, W]: u at the same cell centres, float32.

Scheme (float64, one sample at a time):
  * Grid: the solve runs on (refine H) x (refine W) cells. g is interpolated bilinearly to the fine cell
    centres (constant beyond the outermost input centres), then exponentiated or thresholded: a continuous
    lognormal coefficient stays continuous, and thresholding the interpolated g puts the jumps on its level
    set rather than on the input grid's staircase.
  * Cell-centred finite volumes, five-point stencil. The flux through an interior face uses the harmonic mean
    2 a1 a2 / (a1 + a2) of its two cells (the exact conductance of two half-cells in series, so a jump in a
    between cells is handled without smearing); a boundary face uses a ghost cell holding -u, so u = 0 on the
    face and its conductance is 2 a / h. The matrix is symmetric positive definite, an M-matrix.
  * Solve: sparse LU (SuperLU through scipy's splu) without pivoting (the matrix is SPD and diagonally
    dominant), in a nested-dissection order computed once per grid shape (measured 10-30% faster than
    SuperLU's MMD ordering here, ~2x faster than its default COLAMD); the sparsity pattern is built once
    too, and refilled per sample.
  * Back to the input grid: u at each input centre, the central fine cell for odd refine, the mean of the
    2 x 2 fine cells around it for even refine (second-order accurate; a mean over the whole r x r block
    would converge to the cell average, not the point value).

Accuracy at 64 x 64, relative L2 (4 samples; g a Gaussian field, Matern 5/2, length 0.1, pointwise std 1):
  * lognormal a: refine = 1 vs refine = 4: 2.5e-3 to 5.4e-3; refine = 2 vs refine = 4: 6.3e-4 to 9.6e-4
    (ratio 3.7-5.6: second order, 5 for a pure h^2 error against a 4x finer reference).
  * threshold mode (threshold 0): 6.6e-3 to 1.3e-2 and 1.8e-3 to 4.6e-3 (interfaces cut cells: ~first order).
  * constant a: against the Poisson series u = sum 16 sin(m pi x) sin(k pi y) / (pi^4 m k (m^2 + k^2) a),
    m, k odd: 5.6e-4 at refine = 1, 5.1e-5 at refine = 2.
Speed (one thread, 64 x 64, refine = 2, i.e. 16,384 unknowns): 19-22 samples per CPU-second, 15-20 samples/s
wall-clock on a machine loaded by another job; ~90% of it is SuperLU's factorisation.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

VERSION = "darcy-fv-1"  # bump when the numerics change; recorded in fingerprints
HIGH, LOW = 12.0, 3.0  # the threshold mode's two permeabilities


def _bilinear(n: int, r: int) -> np.ndarray:
    """[r n, n] weights taking values at n cell centres to the centres of r n cells (clamped at the ends)."""
    s = np.clip((np.arange(r * n) + 0.5) / r - 0.5, 0, n - 1)
    i = np.minimum(np.floor(s).astype(int), max(n - 2, 0))
    t = s - i
    w = np.zeros((r * n, n))
    w[np.arange(r * n), i] = 1 - t
    w[np.arange(r * n), np.minimum(i + 1, n - 1)] += t
    return w


def coefficient(g: np.ndarray, refine: int = 2, threshold: float | None = None) -> np.ndarray:
    """a on the fine grid [refine H, refine W] from the log-permeability g [H, W]."""
    fine = _bilinear(g.shape[0], refine) @ np.asarray(g, dtype=np.float64) @ _bilinear(g.shape[1], refine).T
    return np.exp(fine) if threshold is None else np.where(fine >= threshold, HIGH, LOW)


def _dissection(ny: int, nx: int) -> np.ndarray:
    """Nested-dissection order of an ny x nx grid: each half first, the separating line last, recursively."""
    order = []

    def split(block):
        h, w = block.shape
        if h * w <= 16:
            order.append(block.ravel())
            return
        if w < h:
            block = block.T
        m = block.shape[1] // 2
        split(block[:, :m])
        split(block[:, m + 1 :])
        order.append(block[:, m])

    split(np.arange(ny * nx).reshape(ny, nx))
    return np.concatenate(order)


@functools.lru_cache(maxsize=8)
def _pattern(ny: int, nx: int) -> tuple[np.ndarray, ...]:
    """The matrix's CSC pattern in dissection order: (indptr, indices, source, position of each cell).

    Values vector per sample: [diagonal (ny nx), -x-face conductances, -y-face conductances]; the matrix's
    data is values[source]."""
    n = ny * nx
    cell = np.arange(n).reshape(ny, nx)
    xl, xr = cell[:, :-1].ravel(), cell[:, 1:].ravel()
    yl, yr = cell[:-1, :].ravel(), cell[1:, :].ravel()
    fx, fy = n + np.arange(len(xl)), n + len(xl) + np.arange(len(yl))
    rows = np.concatenate([cell.ravel(), xl, xr, yl, yr])
    cols = np.concatenate([cell.ravel(), xr, xl, yr, yl])
    src = np.concatenate([np.arange(n), fx, fx, fy, fy])
    position = np.empty(n, dtype=np.int64)
    position[_dissection(ny, nx)] = np.arange(n)
    rows, cols = position[rows], position[cols]
    by_column = np.lexsort((rows, cols))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n))])
    return indptr, rows[by_column], src[by_column], position


def solve_fine(a: np.ndarray, f: float = 1.0) -> np.ndarray:
    """u [ny, nx] at the cell centres for the coefficient a [ny, nx] on the unit square, u = 0 on its edge."""
    ny, nx = a.shape
    ix2, iy2 = float(nx) ** 2, float(ny) ** 2  # 1 / h^2 in each direction
    hx = 2 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:]) * ix2
    hy = 2 * a[:-1, :] * a[1:, :] / (a[:-1, :] + a[1:, :]) * iy2
    diag = np.zeros_like(a)
    diag[:, :-1] += hx
    diag[:, 1:] += hx
    diag[:-1, :] += hy
    diag[1:, :] += hy
    diag[:, 0] += 2 * a[:, 0] * ix2  # ghost cells: u = 0 on the boundary faces
    diag[:, -1] += 2 * a[:, -1] * ix2
    diag[0, :] += 2 * a[0, :] * iy2
    diag[-1, :] += 2 * a[-1, :] * iy2
    indptr, indices, src, position = _pattern(ny, nx)
    values = np.concatenate([diag.ravel(), -hx.ravel(), -hy.ravel()])
    A = sp.csc_matrix((values[src], indices, indptr), shape=(ny * nx, ny * nx))
    lu = spla.splu(A, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    return lu.solve(np.full(ny * nx, float(f)))[position].reshape(ny, nx)


def sample_back(u: np.ndarray, refine: int) -> np.ndarray:
    """u at the input centres from the fine solution [refine H, refine W]: see the module docstring."""
    r, c = refine, refine // 2
    if r % 2:
        return u[c::r, c::r]
    blocks = u.reshape(u.shape[0] // r, r, u.shape[1] // r, r)
    return blocks[:, c - 1 : c + 1, :, c - 1 : c + 1].mean(axis=(1, 3))


class Darcy:
    """Callable-class shape: configured in __init__, __call__(x) on numpy [n, 1, H, W] -> float32 same shape."""

    version = VERSION

    def __init__(self, f: float = 1.0, refine: int = 2, threshold: float | None = None):
        if not math.isfinite(f):
            raise ValueError(f"Darcy f must be finite, got {f}.")
        if int(refine) != refine or refine < 1:
            raise ValueError(f"Darcy refine must be an integer >= 1, got {refine}.")
        if threshold is not None and not math.isfinite(threshold):
            raise ValueError(f"Darcy threshold must be None or finite, got {threshold}.")
        self.f, self.refine = float(f), int(refine)
        self.threshold = None if threshold is None else float(threshold)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != 1 or min(x.shape[2:]) < 2:
            raise ValueError(f"Darcy expects x of shape [n, 1, H, W] (log-permeability at H x W cell centres, "
                             f"H, W >= 2), got shape {list(x.shape)}.")
        if not np.isfinite(x).all():
            raise ValueError("Darcy input must be finite, got NaN or infinity.")
        out = np.empty(x.shape, dtype=np.float32)
        for i in range(len(x)):
            a = coefficient(x[i, 0], self.refine, self.threshold)
            out[i, 0] = sample_back(solve_fine(a, self.f), self.refine)
        return out

    def __repr__(self) -> str:
        return f"Darcy(f={self.f}, refine={self.refine}, threshold={self.threshold}, version={VERSION!r})"
