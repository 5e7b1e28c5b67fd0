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
from pipeline.inputs import space
from students.losses import relative_error

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


@torch.inference_mode()
def field_details(student: torch.nn.Module, split_dir: str, manifest: shards.Manifest, batch_size: int) -> dict:
    """One pass over the held-out rows: the WORST samples' fields and the error and solver spectra."""
    decode = space.decode_module(manifest.input_space, manifest.input_shape, manifest.parameters)
    shape, in_shape = list(manifest.target_shape), list(manifest.input_shape)
    worst: list[tuple] = []
    error_power = solver_power = None
    count = 0
    for batch in shards.iter_batches(split_dir, manifest, batch_size):
        x, y = batch["input"], batch[manifest.target_column].float()
        pred = student(decode(x))
        err = relative_error(pred.double(), y.double()).numpy()
        for i in np.argsort(-err)[:WORST]:
            worst.append((float(err[i]), x[i].float().numpy(), y[i].numpy(), pred[i].numpy()))
        worst = sorted(worst, key=lambda w: -w[0])[:WORST]
        fields = (pred - y).numpy().reshape(-1, *shape[1:])  # every channel of every sample
        e, s = radial_power(fields), radial_power(y.numpy().reshape(-1, *shape[1:]))
        error_power = e if error_power is None else error_power + e
        solver_power = s if solver_power is None else solver_power + s
        count += len(fields)
    if not count:
        return {}
    return {"fields": {
        "input_shape": in_shape, "target_shape": shape,
        "worst": [{"error": w, "input": _round(xi.reshape(in_shape)), "teacher": _round(t.reshape(shape)),
                   "student": _round(p.reshape(shape))} for w, xi, t, p in worst],
        "spectrum": {"wavenumber": list(range(len(error_power))), "error": (error_power / count).tolist(),
                     "solver": (solver_power / count).tolist()},
    }}
