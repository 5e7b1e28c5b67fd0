"""The field-to-field simulator teachers BurgersOperator (1-D, spectral) and Darcy (2-D, finite volumes): exact
solutions, convergence rates, conservation, batch independence, input checks. A second or two: Burgers on
256 cells, Darcy on grids of 16 x 16 to 32 x 32 (81 x 81 once)."""

from __future__ import annotations

import numpy as np
import pytest

from teachers.simulators.burgers_operator import BurgersOperator, solve
from teachers.simulators.darcy import Darcy, coefficient


def rel(a, b, axes=-1):  # relative L2, per row by default
    return np.linalg.norm(a - b, axis=axes) / np.linalg.norm(b, axis=axes)


def trig_rows(n, P, modes=24, seed=0, scale=1.0):
    """Random smooth periodic rows [n, P] with modes below `modes` (decaying), means included."""
    rng, m = np.random.default_rng(seed), np.arange(modes)
    c = (rng.standard_normal((n, modes)) + 1j * rng.standard_normal((n, modes))) / (1 + m / 3.0) ** 2
    u = np.real(c @ np.exp(2j * np.pi * np.outer(m, np.arange(P) / P)))
    return scale * u / np.abs(u).max(axis=1, keepdims=True)


def cole_hopf(w0, mean, nu, t_end, P, fine=4096):
    """Exact u(x_j, t_end), x_j = j / P, for u0 = mean + w0(x), w0 periodic with zero mean (a callable).

    u = mean + w(x - mean t), w = -2 nu phi_x / phi, phi_t = nu phi_xx, phi0 = exp(-(1 / 2 nu) int_0^x w0)."""
    W = np.fft.rfft(w0(np.arange(fine) / fine))
    m = np.arange(len(W))
    W[0], W[1:] = 0, W[1:] / (2j * np.pi * m[1:])
    phi = np.fft.rfft(np.exp(-np.fft.irfft(W, n=fine) / (2 * nu)))
    phi *= np.exp(-nu * (2 * np.pi * m) ** 2 * t_end - 2j * np.pi * m * mean * t_end)
    u = mean - 2 * nu * np.fft.irfft(2j * np.pi * m * phi, n=fine) / np.fft.irfft(phi, n=fine)
    return u[:: fine // P]


CASES = [(lambda x: np.sin(2 * np.pi * x), 0.0), (lambda x: 4 * np.sin(2 * np.pi * x), 0.0),  # (w0, mean)
         (lambda x: 2 * np.sin(2 * np.pi * x) + np.cos(6 * np.pi * x), 0.7)]


@pytest.mark.parametrize("w0, mean", CASES)
def test_burgers_matches_cole_hopf(w0, mean):
    P = 128
    out = BurgersOperator(cells=256)((mean + w0(np.arange(P) / P))[None, None].astype(np.float32))
    assert out.shape == (1, 1, P) and out.dtype == np.float32
    # Measured relative L2: 2.9e-6, 2.3e-6, 8.7e-8 (time-step error: the same at 1024 cells).
    assert rel(out[0, 0], cole_hopf(w0, mean, 0.1, 1.0, P)) < 2e-5


def test_burgers_converges_at_fourth_order_in_time_and_spectrally_in_space():
    P, (w0, mean) = 128, CASES[1]
    exact = cole_hopf(w0, mean, 0.1, 1.0, P)
    errors = [rel(solve((mean + w0(np.arange(P) / P))[None], cells=256, step_factor=k)[0], exact) for k in (1, 2, 4)]
    # ETDRK4: halving every step divides the error by ~16 (measured 13.7, 14.7; second order would give 4).
    assert errors[0] / errors[1] > 10 and errors[1] / errors[2] > 10, errors
    # Inputs with modes below 20, kept whole by every grid here: the error is the discarded modes above K.
    rows = trig_rows(4, 256, modes=20, seed=1, scale=4.0)
    coarse, mid, fine = (solve(rows, cells=n) for n in (64, 128, 512))
    # Spectral: one doubling gains many orders of magnitude (measured 1.9e-5 -> 9e-15), not a fixed factor.
    assert rel(coarse, fine).max() > 1e-7 and rel(mid, fine).max() < 1e-11


@pytest.mark.parametrize("P", [128, 96, 75])
def test_burgers_output_is_one_function_whatever_P(P):
    # A row with modes below P / 2 is the same function sampled at P or 2P points; so must the outputs be.
    rows = trig_rows(3, 2 * P, modes=30, seed=2, scale=2.0)
    # At nu = 0.003, t = 0.2 fronts have formed: modes above P / 2 matter, and must be folded, not dropped.
    for op in (BurgersOperator(cells=256), BurgersOperator(nu=0.003, t_end=0.2, cells=256)):
        fine, coarse = op(rows[:, None].astype(np.float32)), op(rows[:, None, ::2].astype(np.float32))
        assert np.abs(fine[:, :, ::2] - coarse).max() < 2e-6
        assert np.abs(fine).max() > 0.05  # not trivially equal
    if P % 2 == 0:  # the grid-scale (Nyquist) mode of an even P has no definite phase: dropped, no effect
        sawtooth = rows[:, None, ::2] + 0.3 * (-1.0) ** np.arange(P)
        assert np.abs(op(sawtooth.astype(np.float32)) - coarse).max() < 1e-6


def test_burgers_rows_do_not_depend_on_their_batch():
    rows = (trig_rows(5, 64, seed=3) * np.array([0.3, 1.0, 4.0, 2.0, 0.7])[:, None])[:, None].astype(np.float32)
    op, order = BurgersOperator(cells=256), np.array([3, 0, 4, 1, 2])
    together = op(rows)
    assert all(np.array_equal(op(rows[i : i + 1])[0], together[i]) for i in range(len(rows)))
    assert np.array_equal(op(rows[order]), together[order])


def test_burgers_conserves_the_mean():
    rows = trig_rows(4, 128, seed=4, scale=3.0) + np.array([-1.0, 0.0, 0.5, 1.5])[:, None]
    out = BurgersOperator(cells=256)(rows[:, None].astype(np.float32))
    assert np.abs(out[:, 0].astype(np.float64).mean(axis=1) - rows.mean(axis=1)).max() < 2e-6
    assert rel(out[:, 0], rows).min() > 0.1  # it did evolve


@pytest.mark.parametrize("shape", [(4, 64), (4, 2, 64), (4, 1, 1), (4, 1, 8, 8)])
def test_burgers_rejects_malformed_shapes(shape):
    with pytest.raises(ValueError, match=r"\[n, 1, P\]"):
        BurgersOperator(cells=64)(np.zeros(shape, dtype=np.float32))


def centres(n):
    return (np.arange(n) + 0.5) / n


def smooth_log_permeability(n):
    return 0.8 * np.sin(2 * np.pi * centres(n))[None, :] * np.cos(np.pi * centres(n))[:, None] + 0.5 * centres(n)


def poisson_series(n, terms=400):
    """-lap u = 1 on the unit square, u = 0 on its edge, at n x n cell centres (odd-mode sine series)."""
    m = np.arange(1, terms, 2)
    s = np.sin(np.pi * np.outer(m, centres(n)))
    return s.T @ (16 / (np.pi**4 * np.outer(m, m) * (m[:, None] ** 2 + m[None, :] ** 2))) @ s


def test_darcy_refinement_converges_at_second_order():
    g = smooth_log_permeability(16)[None, None]
    u = {r: Darcy(refine=r)(g)[0, 0].astype(np.float64) for r in (1, 2, 4, 8)}
    # Against refine = 4: measured 1.1e-2 at refine = 1, 1.1e-3 at refine = 2.
    assert rel(u[1], u[4], None) > 3 * rel(u[2], u[4], None)
    # Against refine = 8 the ratio is 5 for second order, 3 for first; measured 5.0.
    ratio = rel(u[2], u[8], None) / rel(u[4], u[8], None)
    assert 4.0 < ratio < 6.5, ratio


def test_darcy_coefficient_jumps_on_faces_converge_at_second_order():
    # a = 12 left of x = 1/3 and above y = 2/3, 3 elsewhere: jumps on cell faces of the 9, 27 and 81 grids,
    # whose centres nest (factor 3). Harmonic face means keep second order (ratio ~10; measured 9.7); the
    # arithmetic mean would fall to first order (ratio ~4; measured 3.4).
    def layered(n):
        return np.log(np.where((centres(n) < 1 / 3)[None, :] | (centres(n) > 2 / 3)[:, None], 12.0, 3.0))

    u = {n: Darcy(refine=1)(layered(n)[None, None])[0, 0].astype(np.float64) for n in (9, 27, 81)}
    ratio = rel(u[9], u[81][4::9, 4::9], None) / rel(u[27][1::3, 1::3], u[81][4::9, 4::9], None)
    assert ratio > 7, ratio


def test_darcy_coefficient_is_bilinear_in_the_log_permeability():
    n, refine = 8, 4
    g = 0.3 + 0.5 * centres(n)[None, :] - 0.8 * centres(n)[:, None]  # linear: reproduced exactly inside
    a, xf, inside = coefficient(g, refine), centres(n * refine), slice(refine // 2, -(refine // 2))
    assert a.shape == (n * refine, n * refine)
    expected = np.exp(0.3 + 0.5 * xf[None, :] - 0.8 * xf[:, None])
    assert np.allclose(a[inside, inside], expected[inside, inside], rtol=1e-12)
    # Beyond the outermost input centres g is held: the outer refine / 2 fine rows take g at y = 1 / 2n.
    assert np.allclose(a[: refine // 2, inside], np.exp(0.3 + 0.5 * xf - 0.8 * 0.5 / n)[inside], rtol=1e-12)
    assert set(np.unique(coefficient(g, refine, threshold=0.0))) == {3.0, 12.0}


def test_darcy_vanishes_at_the_boundary_and_is_positive_inside():
    rng = np.random.default_rng(5)
    rough = np.kron(rng.standard_normal((8, 8)), np.ones((4, 4)))[None, None]  # lognormal, 32 x 32
    assert (Darcy(refine=2)(rough) > 0).all()
    u = Darcy(refine=2)(smooth_log_permeability(32)[None, None])[0, 0].astype(np.float64)
    assert (u > 0).all()
    # Linear extrapolation from the two outermost centres to each wall: zero to O(h^2). Measured 0.012 of
    # max u; with the wall put half a cell too far out (boundary conductance a / h, not 2 a / h), 0.060.
    for v in (u, u.T):
        assert np.abs(1.5 * v[[0, -1]] - 0.5 * v[[1, -2]]).max() < 0.025 * u.max()
    assert np.abs(u[[0, -1]]).max() < 0.15 * u.max()


def test_darcy_constant_coefficient_is_the_poisson_solution_scaled():
    n, c = 32, 2.5
    u1, uc = (Darcy(refine=2)(np.full((1, 1, n, n), g))[0, 0].astype(np.float64) for g in (0.0, np.log(c)))
    assert rel(uc * c, u1, None) < 1e-6  # the discrete solution scales exactly as 1/c
    # Measured 2.1e-4 at 32 x 32, refine = 2 (5.1e-5 at 64 x 64): second order.
    assert rel(uc, poisson_series(n) / c, None) < 6e-4
    # Odd and larger refinements sample the point values too (a mean over each whole refine x refine block
    # would converge to the cell averages instead, ~2e-3 away here). Measured 1.0e-3 and 2.1e-4 at 16 x 16.
    for refine, tolerance in ((3, 3e-3), (4, 6e-4)):
        u = Darcy(refine=refine)(np.zeros((1, 1, 16, 16), np.float32))[0, 0].astype(np.float64)
        assert rel(u, poisson_series(16), None) < tolerance
    assert rel(Darcy(refine=2, f=3.0)(np.zeros((1, 1, n, n)))[0, 0], 3 * u1, None) < 1e-6  # linear in f


def test_darcy_threshold_mode_lies_between_its_two_phases():
    g = smooth_log_permeability(16)[None, None]
    low, high = (Darcy(refine=1, threshold=t)(g)[0, 0].astype(np.float64) for t in (10.0, -10.0))
    assert rel(low / 4, high, None) < 1e-6  # all a = 3 (nothing reaches 10), all a = 12
    assert rel(high, Darcy(refine=1)(np.full_like(g, np.log(12.0)))[0, 0], None) < 1e-6
    mixed = Darcy(refine=1, threshold=0.0)(g)[0, 0].astype(np.float64)
    assert (mixed > 0).all()
    # At refine = 1 the output is the solve's grid, and mean(u) = 1' A^-1 1 / cells decreases as the face
    # conductances grow; they all lie between those of a = 3 and a = 12. Both phases present: strictly.
    assert 1.2 * high.mean() < mixed.mean() < low.mean() / 1.2


def test_darcy_rows_do_not_depend_on_their_batch():
    rng = np.random.default_rng(6)
    g = rng.standard_normal((3, 1, 16, 16)).astype(np.float32)
    for kwargs in ({}, {"threshold": 0.0}):
        op = Darcy(**kwargs)
        together = op(g)
        assert together.shape == g.shape and together.dtype == np.float32
        assert all(np.array_equal(op(g[i : i + 1])[0], together[i]) for i in range(len(g)))


@pytest.mark.parametrize("shape", [(2, 16, 16), (2, 2, 16, 16), (2, 1, 16), (2, 1, 1, 16)])
def test_darcy_rejects_malformed_shapes(shape):
    with pytest.raises(ValueError, match=r"\[n, 1, H, W\]"):
        Darcy()(np.zeros(shape, dtype=np.float32))
