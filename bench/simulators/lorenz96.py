"""The Lorenz-96 system at a short horizon: a chaotic simulator teacher written as a user would.

    dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F,   i = 0 .. N-1 (indices modulo N),   N = 36

Inputs are rows (F, amplitude, position, width). The run starts from the forcing's fixed point x_i = F
plus a periodic bump at a continuous position,

    x_i(0) = F + amplitude * exp((cos(2 pi (i - position) / N) - 1) / width^2),

and the output is the state x(t = 0.6) (N values). Each sample is one scipy.integrate.solve_ivp call (DOP853,
rtol 1e-9, atol 1e-9), one sample after another.

Why it is hard for a surrogate: the system is chaotic for F above ~5 (leading Lyapunov exponent ~1.7 per
time unit at F = 8) and x = F is an unstable fixed point, so the bump grows and spreads downstream as a
wave train whose amplitudes and phases move fast with F and the bump's shape. The horizon is short enough
that the map from parameters to state is still smooth (no decorrelation yet), but it is a strongly
nonlinear map, and the position shifts the whole pattern around the ring (equivariance the student must
learn from data): as a function of the position each output is a travelling wave, with more harmonics the
narrower the bump. The width's lower end (0.4, a bump ~2.3 sites wide) sets the difficulty: down to 0.2
(one site wide) a plain MLP's held-out error grows several times at the same labels, and the solver needs
about twice the steps. Note the scale: ||x(T)|| is mostly the background F * sqrt(N); the bump's wave is a
tenth of it in a typical sample, so a relative error of 1e-2 is ~10% of the wave there.

Self-check (`python -m bench.simulators.lorenz96`): against the same integration at far tighter tolerances,
and the shift equivariance (moving the bump by one site rolls the output by one site).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

VERSION = "lorenz96-n36-t0.6-1"
N = 36
HORIZON = 0.6
PARAMETERS = [
    {"name": "F", "low": 6.0, "high": 10.0},  # forcing
    {"name": "amplitude", "low": 0.5, "high": 3.0},  # height of the initial bump
    {"name": "position", "low": 0.0, "high": float(N)},  # where the bump sits, in sites (periodic)
    {"name": "width", "low": 0.4, "high": 1.0},  # bump width (about width * N / (2 pi) sites: 2.3 to 5.7)
]


def _rhs(t, x, F):
    return (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + F


def initial_state(F: float, amplitude: float, position: float, width: float) -> np.ndarray:
    i = np.arange(N)
    return F + amplitude * np.exp((np.cos(2 * np.pi * (i - position) / N) - 1) / width**2)


class Lorenz96:
    """Callable simulator: float32 [B, 4] (F, amplitude, position, width) -> float64 [B, 36], x(t = 0.6)."""

    version = VERSION

    def __init__(self, rtol: float = 1e-9, atol: float = 1e-9, horizon: float = HORIZON):
        self.rtol, self.atol, self.horizon = float(rtol), float(atol), float(horizon)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), N))
        for i, row in enumerate(np.asarray(x, dtype=np.float64)):
            F = row[0]
            sol = solve_ivp(_rhs, (0.0, self.horizon), initial_state(*row), method="DOP853", args=(F,),
                            rtol=self.rtol, atol=self.atol)
            if not sol.success:
                raise RuntimeError(f"Lorenz-96 solver failed at {row.tolist()}: {sol.message}")
            out[i] = sol.y[:, -1]
        return out


if __name__ == "__main__":  # self-check and throughput
    import time

    rng = np.random.default_rng(0)
    lo = np.array([p["low"] for p in PARAMETERS])
    hi = np.array([p["high"] for p in PARAMETERS])
    x = (lo + (hi - lo) * rng.random((200, len(PARAMETERS)))).astype(np.float32)
    began = time.perf_counter()
    y = Lorenz96()(x)
    seconds = time.perf_counter() - began
    tight = Lorenz96(rtol=1e-13, atol=1e-13)(x[:50])
    rel = np.linalg.norm(y[:50] - tight, axis=1) / np.linalg.norm(tight, axis=1)
    shifted = x[:20].copy()
    shifted[:, 2] = (shifted[:, 2] + 1) % N
    rolled = np.abs(Lorenz96()(shifted) - np.roll(y[:20], 1, axis=1)).max()
    moved = np.linalg.norm(y - x[:, :1], axis=1) / np.linalg.norm(y, axis=1)
    # How much the short horizon already amplifies differences: two starts 1e-6 apart.
    nudged = x[:20].astype(np.float64) + [0, 1e-6, 0, 0]
    gain = np.linalg.norm(Lorenz96()(nudged) - y[:20], axis=1) / (np.linalg.norm(
        np.stack([initial_state(*r) for r in nudged]) - np.stack([initial_state(*r) for r in x[:20].astype(np.float64)]), axis=1))
    print(f"Lorenz-96: {len(x) / seconds:.0f} samples/s; rel L2 against rtol 1e-13: max {rel.max():.1e}; "
          f"shift by one site = roll by one: max |difference| {rolled:.1e}; ||x(T) - F|| / ||x(T)||: median "
          f"{np.median(moved):.2f}, max {moved.max():.2f}; growth of an initial difference by t = {HORIZON}: "
          f"median {np.median(gain):.1f}x")
