"""The Burgers simulator teacher: grid convergence, conservation, the step rule, known limits, batch independence,
input checks.

Light by design (a few seconds): small batches, at most 1024 cells (the explicit diffusion makes the steps
grow as cells^2, so the 1024-cell reference is the costliest part)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from teachers.simulators import burgers
from teachers.simulators.burgers import (
    BOUNDS,
    DIFFUSION_NUMBER,
    PARAMETERS,
    VERSION,
    Burgers,
    evolve,
    initial_cell_averages,
    solve,
)

# Spanning the box, steepest corners first (nu = 0.05, A = 1, B = +-0.5: the fronts are only a few cells wide at 256).
POINTS = np.array([
    [0.05, 1.0, 0.0, 0.5],
    [0.05, 1.0, 1.0, -0.5],
    [0.3, 0.2, 2.0, 0.0],
    [0.1, 0.6, 4.0, 0.25],
    [0.2, 1.0, 5.5, -0.5],
    [0.05, 0.2, 3.0, 0.5],
])


def random_params(n: int, seed: int) -> np.ndarray:
    lo, hi = np.array([BOUNDS[p] for p in PARAMETERS]).T
    return lo + (hi - lo) * np.random.default_rng(seed).random((n, len(PARAMETERS)))


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def test_grid_refinement_converges_at_second_order():
    # 1024 cells costs 4x the steps of 512 where the diffusion sets the step (8x the work): ~2 s here.
    u256, u512, u1024 = (solve(POINTS, cells=n) for n in (256, 512, 1024))
    coarse, fine = rel_l2(u256, u512), rel_l2(u512, u1024)
    # Measured: 256 vs 512 at most 7.2e-4, 512 vs 1024 at most 1.7e-4 (both at [0.05, 1.0, 1.0, -0.5]).
    assert coarse.max() < 2e-3, coarse
    assert fine.max() < 5e-4, fine
    # Measured ratios 3.96-4.30: second order, at the steep nu = 0.05 points and the diffusion-dominated
    # nu = 0.3 one alike. First order would give 2.
    assert (coarse / fine).min() > 3.0, coarse / fine


def test_time_step_is_set_by_both_limits(monkeypatch):
    # Count the SSP-RK2 steps each sample takes (one sample per call, so every call is one of its steps).
    calls = []
    original = burgers._step
    monkeypatch.setattr(burgers, "_step", lambda u, dt, *rest: (calls.append(dt[0, 0]), original(u, dt, *rest)))
    cells, cfl = 256, 0.4
    dx = 2 * math.pi / cells
    # Diffusion-dominated (nu = 0.3, small A) and advection-heavy (nu = 0.05, A = 1) corners.
    counts = []
    for row in ([0.3, 0.2, 2.0, 0.0], [0.05, 1.0, 1.0, -0.5]):
        calls.clear()
        params = np.array([row])
        evolve(params, cells=cells, t_end=1.0, cfl=cfl)
        nu, bound = row[0], np.abs(initial_cell_averages(params, cells)).max()
        n, dt = len(calls), calls[0]
        assert n == math.ceil(bound / (cfl * dx) + nu / (DIFFUSION_NUMBER * dx**2))
        assert set(calls) == {1.0 / n}  # equal steps, the last landing on t_end
        # Both limits hold, and so does the combined one under which each forward Euler stage keeps the max
        # principle: dt (2 U / dx + 2 nu / dx^2) <= 1.
        assert dt <= cfl * dx / bound and dt <= DIFFUSION_NUMBER * dx**2 / nu
        assert dt * (2 * bound / dx + 2 * nu / dx**2) <= 1.0
        counts.append((n, math.ceil(bound / (cfl * dx))))
    # Measured: 1266 steps at nu = 0.3 where the advection alone would take 21; 359 at nu = 0.05 against 152.
    assert counts == [(1266, 21), (359, 152)]


def test_mean_is_conserved_and_max_principle_holds():
    params = np.concatenate([POINTS, random_params(32, seed=0)])
    start, end = initial_cell_averages(params), evolve(params)
    # The exact cell averages of the sines have mean 0; the flux form and the central second difference keep it.
    # Measured: |mean| ~ 1e-15 at both times.
    assert np.abs(start.mean(axis=1)).max() < 1e-12
    assert np.abs(end.mean(axis=1) - start.mean(axis=1)).max() < 1e-12
    # Viscous Burgers never raises max|u|, and the per-sample time step relies on the scheme not doing so either.
    assert (np.abs(end).max(axis=1) <= np.abs(start).max(axis=1)).all()


def test_small_amplitude_follows_the_heat_equation():
    # At amplitude A the nonlinearity is a relative O(A t) effect: u ~ A exp(-nu t) sin(x + phi).
    params = np.array([[nu, 1e-3, phi, 0.0] for nu in (0.05, 0.3) for phi in (0.0, 2.0)])
    x = 2 * math.pi * np.arange(64) / 64
    exact = params[:, 1:2] * np.exp(-params[:, 0:1]) * np.sin(x + params[:, 2:3])
    # Measured: relative L2 4.5e-4 (nu = 0.05), 2.8e-4 (nu = 0.3), nearly all of it the nonlinearity.
    assert rel_l2(solve(params), exact).max() < 1e-3


def test_explicit_diffusion_decays_at_the_rate_of_the_central_operator():
    # At A = 1e-7 the nonlinearity is negligible and the scheme is the explicit heat equation. The central
    # operator damps sin(x) at rate nu 4 sin^2(dx/2) / dx^2 = nu (1 - dx^2/12 + ...); SSP-RK2 should add next
    # to nothing to that, and the gap to the continuum rate nu is the second-order spatial error nu dx^2 / 12.
    params = np.array([[nu, 1e-7, phi, 0.0] for nu in (0.05, 0.3) for phi in (0.0, 2.0)])
    x = 2 * math.pi * np.arange(64) / 64
    dx = 2 * math.pi / 256
    shape = params[:, 1:2] * np.sin(x + params[:, 2:3])
    out = solve(params)
    semi_discrete = shape * np.exp(-params[:, 0:1] * 4 * math.sin(dx / 2) ** 2 / dx**2)
    # Measured: 4.5e-8 and 2.8e-8 (the remaining O(A t) nonlinearity); the time error is below that.
    assert rel_l2(out, semi_discrete).max() < 2e-7
    # Measured: 2.51e-6 (nu = 0.05) and 1.506e-5 (nu = 0.3), against nu dx^2 / 12 = 2.51e-6 and 1.506e-5.
    continuum = rel_l2(out, shape * np.exp(-params[:, 0:1]))
    np.testing.assert_allclose(continuum, params[:, 0] * dx**2 / 12, rtol=0.05)


def test_zero_time_recovers_the_initial_condition_at_the_points():
    # Exact cell averages, deconvolved and interpolated, give back the point values. Measured: 8e-14.
    x = 2 * math.pi * np.arange(64) / 64
    exact = POINTS[:, 1:2] * np.sin(x + POINTS[:, 2:3]) + POINTS[:, 3:4] * np.sin(2 * x)
    assert np.abs(solve(POINTS, t_end=0.0) - exact).max() < 1e-12


def test_a_sample_does_not_depend_on_its_batch(monkeypatch):
    params = np.concatenate([POINTS, random_params(6, seed=1)])
    batch = solve(params)
    alone = np.concatenate([solve(row[None]) for row in params])
    order = np.random.default_rng(2).permutation(len(params))
    # Per-sample time steps, row-wise arithmetic and row-wise FFTs: bit for bit equal on the machine this was
    # written on; the contract is "to rounding", since vector and scalar library paths could in principle differ.
    assert np.abs(batch - alone).max() <= 1e-12
    assert np.abs(solve(params[order]) - batch[order]).max() <= 1e-12
    assert np.abs(solve(params[:5]) - batch[:5]).max() <= 1e-12
    # Large batches are stepped in blocks of rows (128 at 256 cells); blocks of 3 rows put these 12 rows in 4
    # blocks, with other neighbours, and must not change any row either.
    monkeypatch.setattr(burgers, "_BLOCK_CELLS", 3 * 256)
    assert np.abs(solve(params) - batch).max() <= 1e-12
    assert np.abs(solve(params[order]) - batch[order]).max() <= 1e-12


def test_two_calls_are_bit_identical():
    params = random_params(16, seed=3)
    assert np.array_equal(solve(params), solve(params))


def test_callable_class_matches_solve():
    teacher = Burgers(cells=128, outputs=32, t_end=0.5)
    out = teacher(POINTS)
    assert teacher.version == VERSION == "burgers-fv-2"
    assert out.shape == (len(POINTS), 32) and out.dtype == np.float64
    assert np.array_equal(out, solve(POINTS, cells=128, outputs=32, t_end=0.5))
    assert teacher(np.zeros((0, 4))).shape == (0, 32)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (np.zeros(3), r"\[B, 4\].*got shape \(3,\)"),
        (np.zeros((2, 3)), r"got shape \(2, 3\)"),
        (np.zeros((2, 4, 1)), r"got shape \(2, 4, 1\)"),
        (np.array([[0.1, 0.5, 0.0, np.nan]]), "finite"),
        (np.array([[0.0, 0.5, 0.0, 0.1]]), "nu must be > 0"),
    ],
)
def test_bad_input_raises_a_clear_error(params, message):
    with pytest.raises(ValueError, match=message):
        solve(params)


def test_bad_configuration_fails_at_construction():
    with pytest.raises(ValueError, match="cells"):
        Burgers(cells=2)
    with pytest.raises(ValueError, match="outputs"):
        Burgers(outputs=0)
    with pytest.raises(ValueError, match="t_end"):
        Burgers(t_end=-1.0)
