"""What the report draws for a surrogate of fields ([C', *grid] targets): the worst held-out samples
as whole fields (input, solver, student, error), and the error's spectrum beside the solver's.

The spectrum is the mean power per wavenumber |k| (1-D: per Fourier mode; 2-D: summed over rings of
equal |k|), over every held-out sample and output channel: a student that gets the large scales and
misses the fine ones shows an error spectrum that meets the solver's at high |k|. The grid is taken
as periodic for the transform; on a non-periodic field the edges add some power at every |k|.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline import shards

WORST = 4  # held-out samples drawn as fields


def radial_power(values: np.ndarray) -> np.ndarray:
    """Power per integer wavenumber |k| of fields [n, *grid] (1-D or 2-D), summed over samples."""
    if values.ndim == 2:
        return (np.abs(np.fft.rfft(values, axis=1)) ** 2).sum(0)
    power = (np.abs(np.fft.fft2(values)) ** 2).sum(0)
    ky, kx = np.meshgrid(np.fft.fftfreq(values.shape[1]) * values.shape[1],
                         np.fft.fftfreq(values.shape[2]) * values.shape[2], indexing="ij")
    ring = np.rint(np.hypot(ky, kx)).astype(int)
    limit = min(values.shape[1], values.shape[2]) // 2 + 1
    return np.bincount(ring.ravel(), power.ravel(), minlength=limit)[:limit]


def _round(a: np.ndarray) -> list:
    return np.round(a.astype(np.float64), 6).tolist()


class FieldDetails:
    """Fed each held-out batch by the regression pass over the split (pipeline/evaluate/regression.py):
    keeps the WORST samples' fields and sums the error and solver spectra."""

    def __init__(self, manifest: shards.Manifest):
        self.shape, self.in_shape = list(manifest.target_shape), list(manifest.input_shape)
        self.worst: list[tuple] = []
        self.error_power = self.solver_power = None
        self.count = 0

    def update(self, x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, err: np.ndarray) -> None:
        for i in np.argsort(-err)[:WORST]:
            self.worst.append((float(err[i]), x[i].float().numpy(), y[i].numpy(), pred[i].numpy()))
        self.worst = sorted(self.worst, key=lambda w: -w[0])[:WORST]
        fields = (pred - y).numpy().reshape(-1, *self.shape[1:])  # every channel of every sample
        e, s = radial_power(fields), radial_power(y.numpy().reshape(-1, *self.shape[1:]))
        self.error_power = e if self.error_power is None else self.error_power + e
        self.solver_power = s if self.solver_power is None else self.solver_power + s
        self.count += len(fields)

    def result(self) -> dict:
        if not self.count:
            return {}
        shape, in_shape = self.shape, self.in_shape
        return {"fields": {
            "input_shape": in_shape, "target_shape": shape,
            "worst": [{"error": w, "input": _round(xi.reshape(in_shape)), "teacher": _round(t.reshape(shape)),
                       "student": _round(p.reshape(shape))} for w, xi, t, p in self.worst],
            "spectrum": {"wavenumber": list(range(len(self.error_power))),
                         "error": (self.error_power / self.count).tolist(),
                         "solver": (self.solver_power / self.count).tolist()},
        }}
