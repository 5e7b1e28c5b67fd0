"""Two-compartment pharmacokinetics after an intravenous bolus: a simulator teacher written as a user would.

    dA1/dt = -(k10 + k12) A1 + k21 A2        A1(0) = dose    (central compartment, mg)
    dA2/dt =          k12 A1 - k21 A2        A2(0) = 0       (peripheral compartment, mg)
    C(t)   = A1(t) / V                                       (central concentration, mg/L)

Inputs are rows (dose [mg], V [L], k10, k12, k21 [1/h]), all sampled on a log scale; the output is C(t) at
48 times spaced geometrically from 0.1 h to 48 h (dense early, as PK sampling is). Each sample is one
scipy.integrate.solve_ivp call (LSODA, rtol 1e-8, atol a 1e-14 share of the dose), one sample after another.

Why it is hard for a surrogate: the outputs span decades. dose/V alone moves a curve over four decades
(1/50 to 200 mg/L), and within a curve the concentration falls by up to ten decades over 48 h when
elimination is fast. A loss on standardised raw values is ruled by the largest doses and the first hours;
the relative error of a small-dose curve is then poor unless the targets are transformed (log).

The system is linear, so `analytic` gives the closed form (a sum of two exponentials) to check the solver.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

VERSION = "pk-2cmt-iv-1"
PARAMETERS = [
    {"name": "dose", "low": 1.0, "high": 1000.0, "log": True},  # mg
    {"name": "V", "low": 5.0, "high": 50.0, "log": True},  # L, central volume
    {"name": "k10", "low": 0.03, "high": 0.5, "log": True},  # 1/h, elimination (half-life 1.4 h to 23 h)
    {"name": "k12", "low": 0.05, "high": 1.0, "log": True},  # 1/h, central -> peripheral
    {"name": "k21", "low": 0.05, "high": 1.0, "log": True},  # 1/h, peripheral -> central
]
TIMES = np.geomspace(0.1, 48.0, 48)  # h


def _rhs(t, a, k10, k12, k21):
    a1, a2 = a
    return [-(k10 + k12) * a1 + k21 * a2, k12 * a1 - k21 * a2]


def analytic(row, times=TIMES) -> np.ndarray:
    """Closed-form C(t) of the same model: dose/V (A e^{-alpha t} + B e^{-beta t})."""
    dose, v, k10, k12, k21 = (float(p) for p in row)
    s, p = k10 + k12 + k21, k10 * k21
    root = np.sqrt(s * s - 4 * p)
    alpha, beta = (s + root) / 2, (s - root) / 2
    a = (alpha - k21) / (alpha - beta)
    return dose / v * (a * np.exp(-alpha * times) + (1 - a) * np.exp(-beta * times))


class PK:
    """Callable simulator: float32 [B, 5] (dose, V, k10, k12, k21) -> float64 [B, 48] concentrations (mg/L)."""

    version = VERSION

    def __init__(self, rtol: float = 1e-8, atol_fraction: float = 1e-14):
        self.rtol, self.atol_fraction = float(rtol), float(atol_fraction)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), len(TIMES)))
        for i, row in enumerate(np.asarray(x, dtype=np.float64)):
            dose, v, k10, k12, k21 = row
            sol = solve_ivp(_rhs, (0.0, TIMES[-1]), [dose, 0.0], method="LSODA", t_eval=TIMES,
                            args=(k10, k12, k21), rtol=self.rtol, atol=self.atol_fraction * dose)
            if not sol.success:
                raise RuntimeError(f"PK solver failed at {row.tolist()}: {sol.message}")
            out[i] = sol.y[0] / v
        return out


if __name__ == "__main__":  # self-check against the closed form, and throughput
    import time

    rng = np.random.default_rng(0)
    lo = np.log([p["low"] for p in PARAMETERS])
    hi = np.log([p["high"] for p in PARAMETERS])
    x = np.exp(lo + (hi - lo) * rng.random((200, len(PARAMETERS)))).astype(np.float32)
    sim = PK()
    began = time.perf_counter()
    y = sim(x)
    seconds = time.perf_counter() - began
    exact = np.stack([analytic(row) for row in x.astype(np.float64)])
    rel = np.linalg.norm(y - exact, axis=1) / np.linalg.norm(exact, axis=1)
    pointwise = np.abs(y / exact - 1).max()
    print(f"PK: {len(x) / seconds:.0f} samples/s; rel L2 against the closed form: max {rel.max():.2e}; "
          f"largest pointwise relative error {pointwise:.2e}; outputs span {np.log10(y.max() / y.min()):.1f} decades")
