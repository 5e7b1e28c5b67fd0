"""European call prices under the Heston stochastic-volatility model, by Fourier integration: a simulator
teacher written as a user would.

    dS = r S dt + sqrt(v) S dW1,   dv = kappa (theta - v) dt + sigma sqrt(v) dW2,   d<W1, W2> = rho dt

Inputs are rows (T [years], r, kappa, theta, sigma, rho, v0); the spot is 1, so prices are fractions of the
spot. The output is the call price at 21 strikes K = 0.60, 0.65, ..., 1.60. Each price is one
scipy.integrate.quad of Lewis's formula (one Fourier integral along Im u = -1/2, no damping factor to tune):

    C(K) = S - sqrt(S K) e^{-rT} / pi * integral_0^inf Re[e^{i u k} phi(u - i/2)] / (u^2 + 1/4) du,
    k = ln(S / K),   phi(u) = E[exp(i u ln(S_T / S))]

with phi in the "little Heston trap" form (Albrecher et al. 2007: g = (xi - d) / (xi + d) and e^{-dT}, so
the complex logarithm never crosses its branch cut however long the maturity). Prices are clipped to the
no-arbitrage bounds max(S - K e^{-rT}, 0) <= C <= S, which only quadrature noise (~1e-12) ever crosses.

Why it is hard for a surrogate: over part of the box (short maturities, low variance) the out-of-the-money
prices are zero to machine precision while in-the-money ones are intrinsic value plus a little; a price
vector's relative error is ruled by its in-the-money end, but how fast the prices die away with the strike
(the smile) changes by orders of magnitude across the box, and seven parameters interact (rho tilts the
smile, sigma bends it, kappa and T decide how much v0 or theta counts).

Self-check (`python -m bench.simulators.heston`): with sigma -> 0 and v0 = theta the variance stays at
theta, so prices must equal Black-Scholes with volatility sqrt(theta).
"""

from __future__ import annotations

import cmath
import math

import numpy as np
from scipy.integrate import quad

VERSION = "heston-lewis-1"
PARAMETERS = [
    {"name": "T", "low": 0.1, "high": 2.0, "log": True},  # years
    {"name": "r", "low": 0.0, "high": 0.06},  # continuously compounded rate
    {"name": "kappa", "low": 0.5, "high": 5.0, "log": True},  # mean reversion of the variance, 1/year
    {"name": "theta", "low": 0.01, "high": 0.16},  # long-run variance (volatility 10% to 40%)
    {"name": "sigma", "low": 0.1, "high": 1.0},  # volatility of variance
    {"name": "rho", "low": -0.9, "high": 0.0},  # correlation of spot and variance
    {"name": "v0", "low": 0.01, "high": 0.16},  # initial variance
]
STRIKES = np.round(np.linspace(0.6, 1.6, 21), 10)  # moneyness K / S, S = 1
SPOT = 1.0


def char_fn(u: complex, T: float, r: float, kappa: float, theta: float, sigma: float, rho: float, v0: float) -> complex:
    """E[exp(i u ln(S_T / S))] under Heston, the little-trap form (stable for any T)."""
    iu = 1j * u
    xi = kappa - sigma * rho * iu
    d = cmath.sqrt(xi * xi + sigma * sigma * (u * u + iu))
    g = (xi - d) / (xi + d)
    e = cmath.exp(-d * T)
    a = iu * r * T + kappa * theta / (sigma * sigma) * ((xi - d) * T - 2.0 * cmath.log((1.0 - g * e) / (1.0 - g)))
    b = v0 / (sigma * sigma) * (xi - d) * (1.0 - e) / (1.0 - g * e)
    return cmath.exp(a + b)


def lewis_call(K: float, T: float, r: float, params: tuple, epsabs: float = 1e-11, epsrel: float = 1e-9,
               cf=char_fn) -> float:
    """One call price by Lewis's formula: one adaptive quadrature on [0, inf)."""
    k = math.log(SPOT / K)

    def integrand(w: float) -> float:
        z = complex(w, -0.5)
        return (cmath.exp(1j * w * k) * cf(z, T, r, *params)).real / (w * w + 0.25)

    integral, _ = quad(integrand, 0.0, np.inf, epsabs=epsabs, epsrel=epsrel, limit=400)
    price = SPOT - math.sqrt(SPOT * K) * math.exp(-r * T) / math.pi * integral
    return min(max(price, SPOT - K * math.exp(-r * T), 0.0), SPOT)


class Heston:
    """Callable simulator: float32 [B, 7] (T, r, kappa, theta, sigma, rho, v0) -> float64 [B, 21] call prices."""

    version = VERSION

    def __init__(self, epsabs: float = 1e-11, epsrel: float = 1e-9):
        self.epsabs, self.epsrel = float(epsabs), float(epsrel)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), len(STRIKES)))
        for i, row in enumerate(np.asarray(x, dtype=np.float64)):
            T, r, kappa, theta, sigma, rho, v0 = (float(p) for p in row)
            for j, K in enumerate(STRIKES):
                out[i, j] = lewis_call(float(K), T, r, (kappa, theta, sigma, rho, v0), self.epsabs, self.epsrel)
        return out


def black_scholes_call(K: float, T: float, r: float, vol: float) -> float:
    from scipy.stats import norm

    sd = vol * math.sqrt(T)
    d1 = (math.log(SPOT / K) + (r + 0.5 * vol * vol) * T) / sd
    return SPOT * norm.cdf(d1) - K * math.exp(-r * T) * norm.cdf(d1 - sd)


if __name__ == "__main__":  # self-check against Black-Scholes, and throughput
    import time

    # The gap to Black-Scholes is O(sigma rho) (the leading smile correction), O(sigma^2) at rho = 0: it must
    # shrink 10x (rho != 0) or 100x (rho = 0) per 10x smaller sigma, down to the quadrature's ~1e-10.
    for T, r, theta in ((0.25, 0.02, 0.04), (1.0, 0.05, 0.09), (2.0, 0.0, 0.16), (0.1, 0.03, 0.01)):
        bs = np.array([black_scholes_call(float(K), T, r, math.sqrt(theta)) for K in STRIKES])
        for rho in (-0.5, 0.0):
            gaps = [np.abs(Heston()(np.array([[T, r, 1.5, theta, sigma, rho, theta]]))[0] - bs).max()
                    for sigma in (1e-2, 1e-3, 1e-4)]
            print(f"T {T}, r {r}, vol {math.sqrt(theta):.2f}, rho {rho}: max |Heston - BS| at sigma 1e-2, 1e-3, 1e-4: "
                  + ", ".join(f"{g:.1e}" for g in gaps) + f" (prices {bs.min():.1e} .. {bs.max():.3f})")
    # Black-Scholes's own characteristic function through the same quadrature: the formula, isolated.
    bs_cf = lambda z, T, r, vol: cmath.exp(1j * z * (r - 0.5 * vol * vol) * T - 0.5 * vol * vol * z * z * T)
    lewis_bs = max(abs(lewis_call(float(K), 0.5, 0.03, (0.25,), cf=bs_cf) - black_scholes_call(float(K), 0.5, 0.03, 0.25))
                   for K in STRIKES)
    print(f"Lewis formula with the Black-Scholes characteristic function: max |error| {lewis_bs:.2e}")

    rng = np.random.default_rng(0)
    lo = np.array([math.log(p["low"]) if p.get("log") else p["low"] for p in PARAMETERS])
    hi = np.array([math.log(p["high"]) if p.get("log") else p["high"] for p in PARAMETERS])
    u = lo + (hi - lo) * rng.random((100, len(PARAMETERS)))
    x = np.where([p.get("log", False) for p in PARAMETERS], np.exp(u), u).astype(np.float32)
    began = time.perf_counter()
    y = Heston()(x)
    seconds = time.perf_counter() - began
    # No arbitrage: prices must come out non-increasing and convex in the strike.
    steps = np.diff(y, axis=1)
    print(f"Heston: {len(x) / seconds:.1f} samples/s; prices {y.min():.1e} .. {y.max():.3f}; share of prices "
          f"below 1e-8: {(y < 1e-8).mean():.3f}; non-increasing in K (to the quadrature's 1e-9): "
          f"{(steps <= 1e-9).all()}, convex in K: {(np.diff(steps, axis=1) >= -1e-9).all()}")
