"""Fourier Neural Operator (Li et al. 2021, arXiv:2010.08895) in 1-D and 2-D: a student that maps a
field [B, C, *grid] to a field [C', *grid'], returned flat as [B, C' * prod(grid')].

The spectral convolution is written here against torch.fft rather than taken from the
`neuraloperator` package, which would pull wandb, tensorly and more into every training process
for some forty lines of code.

Lifting (a 1x1 conv of the input channels plus the grid coordinates, as cos and sin) -> `depth`
Fourier layers of `width` channels (spectral convolution on the `modes` lowest frequencies per
dimension, plus a 1x1 conv; GELU between layers, none after the last) -> pointwise MLP projection
width -> 128 -> C'.
Every part is either pointwise or acts on a fixed set of Fourier modes, so the same weights run on
any grid fine enough for those modes (discretisation invariance). When grid' differs from grid the
projected output is resampled by Fourier truncation (coarser) or zero-padding (finer).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from students.models import register_student

PROJECTION = 128  # hidden width of the projection MLP, as in Li et al.


def field_shapes(input_shape, num_outputs: int, output_shape=None):
    """(C, grid, C', grid') of a field-to-field student; output_shape None means grid' = grid.
    Shared with students.unet."""
    channels, *grid = (int(n) for n in input_shape)
    if len(grid) not in (1, 2):
        raise ValueError(f"field students take input_shape (C, N) or (C, H, W), got {list(input_shape)}")
    if output_shape is None:
        cells = math.prod(grid)
        if num_outputs % cells:
            raise ValueError(f"{num_outputs} outputs are not whole fields on the input grid {grid} "
                             f"(a multiple of {cells} expected): give output_shape [C', *grid'] with "
                             f"C' * prod(grid') = {num_outputs}")
        output_shape = [num_outputs // cells, *grid]
    out_channels, *out_grid = (int(n) for n in output_shape)
    if len(out_grid) != len(grid) or out_channels * math.prod(out_grid) != num_outputs:
        raise ValueError(f"output_shape {list(output_shape)} does not fit: expected [C', *grid'] with "
                         f"{len(grid)} grid axes and C' * prod(grid') = num_outputs = {num_outputs}, got "
                         f"{len(out_grid)} axes and {out_channels * math.prod(out_grid)} values")
    return channels, tuple(grid), out_channels, tuple(out_grid)


class SpectralConv(nn.Module):
    """Multiply the lowest Fourier modes by learned complex matrices (channels in -> out); drop the
    rest. In 2-D the first axis keeps both the +m and -m frequencies (a full FFT along it), the last
    axis only the non-negative ones (rfft), as in Li et al."""

    def __init__(self, cin: int, cout: int, modes: tuple[int, ...]):
        super().__init__()
        self.modes = modes
        rows = [2 * m for m in modes[:-1]]  # +/- frequencies along the full-FFT axes
        scale = 1.0 / (cin * cout)
        # Real and imaginary parts in a trailing axis of 2: a real parameter, so safetensors,
        # Module.float() and optimisers treat it like any other.
        self.weight = nn.Parameter(scale * torch.rand(cin, cout, *rows, modes[-1], 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[2:])
        dims = tuple(range(-len(size), 0))
        if any(n < 2 * m for n, m in zip(size, self.modes)):  # else the kept modes would not exist
            raise ValueError(f"FNO with modes {self.modes} needs a grid of at least "
                             f"{[2 * m for m in self.modes]} points, got {list(size)}")
        # Complex arithmetic done on (real, imag) pairs in a trailing axis: torch.onnx's exporter has
        # no complex einsum, and this keeps the multiply a single real einsum. The FFTs run in the
        # weights' precision: bf16 (autocast) has neither FFTs on CPU nor a complex type.
        dtype = self.weight.dtype
        x_ft = torch.view_as_real(torch.fft.rfftn(x.to(dtype), dim=dims))  # [B, C, *freqs, 2]
        wr, wi = self.weight.unbind(-1)
        w = torch.stack([torch.stack([wr, wi], -1), torch.stack([-wi, wr], -1)], -2)  # (a+ib)(c+id)
        bins = x_ft.shape[-2]
        if len(size) == 1:
            (m,) = self.modes
            y = torch.einsum("bixc,ioxcr->boxr", x_ft[:, :, :m], w)
        else:
            m1, m2 = self.modes
            low = torch.cat([x_ft[:, :, :m1, :m2], x_ft[:, :, -m1:, :m2]], dim=2)
            y = torch.einsum("bixyc,ioxycr->boxyr", low, w)
            gap = y.new_zeros(y.shape[0], y.shape[1], size[0] - 2 * m1, m2, 2)
            y = torch.cat([y[:, :, :m1], gap, y[:, :, m1:]], dim=2)
            m = m2
        out_ft = torch.view_as_complex(F.pad(y.to(dtype), (0, 0, 0, bins - m)).contiguous())
        return torch.fft.irfftn(out_ft, s=size, dim=dims)


def fourier_resample(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resample periodic fields [B, C, *grid] onto `size` points per axis by truncating or
    zero-padding their spectrum: exact for band-limited fields, an ideal low-pass when coarsening."""
    for axis, n in enumerate(size, start=2):
        if x.shape[axis] != n:
            # norm="forward" keeps the coefficients those of the continuous field, independent of N.
            spectrum = torch.fft.rfft(x, dim=axis, norm="forward")
            x = torch.fft.irfft(spectrum, n=n, dim=axis, norm="forward")
    return x


def grid_coordinates(x: torch.Tensor) -> torch.Tensor:
    """The coordinate x = i/N in [0, 1) of each axis as the channels (cos 2 pi x, sin 2 pi x),
    [B, 2d, *grid]. The same position either way, but a raw x is a sawtooth whose Fourier
    coefficients depend on N (it broke the invariance by ~10% of the output's spread between 64
    and 128 points), where these two are single Fourier modes, sampled exactly on every grid."""
    size = x.shape[2:]
    axes = [2 * math.pi * torch.arange(n, dtype=x.dtype, device=x.device) / n for n in size]
    mesh = torch.meshgrid(*axes, indexing="ij")
    features = torch.stack([f(a) for a in mesh for f in (torch.cos, torch.sin)])
    return features.unsqueeze(0).expand(x.shape[0], -1, *size)


class FNO(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, grid: tuple[int, ...], out_grid: tuple[int, ...],
                 width: int, depth: int, modes: tuple[int, ...]):
        super().__init__()
        conv = nn.Conv1d if len(modes) == 1 else nn.Conv2d
        self.grid, self.out_grid = grid, out_grid
        self.lift = conv(in_channels + 2 * len(modes), width, 1)
        self.spectral = nn.ModuleList(SpectralConv(width, width, modes) for _ in range(depth))
        self.pointwise = nn.ModuleList(conv(width, width, 1) for _ in range(depth))
        self.project = nn.Sequential(conv(width, PROJECTION, 1), nn.GELU(), conv(PROJECTION, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lift(torch.cat([x, grid_coordinates(x)], dim=1))
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            h = spectral(h) + pointwise(h)
            if i < len(self.spectral) - 1:  # the last layer feeds the projection linearly
                h = F.gelu(h)
        # On the grid it was built for the output is on out_grid; on a finer or coarser input grid
        # (discretisation invariance) the output grid scales with it.
        # int(): constant sizes when traced for export.
        size = tuple(max(1, (int(n) * o + g // 2) // g)
                     for n, o, g in zip(x.shape[2:], self.out_grid, self.grid))
        return fourier_resample(self.project(h), size).flatten(1)


@register_student("fno")
def fno(input_shape, num_outputs: int, width: int = 32, depth: int = 4, output_shape=None,
        modes: int | None = None) -> nn.Module:
    """Fourier Neural Operator; `modes` per dimension defaults to 16 in 1-D and 12 in 2-D, capped
    at half of each axis of the input grid (its Nyquist frequency)."""
    channels, grid, out_channels, out_grid = field_shapes(input_shape, num_outputs, output_shape)
    if modes is None:
        modes = 16 if len(grid) == 1 else 12
    kept = tuple(max(1, min(modes, n // 2)) for n in grid)
    return FNO(channels, out_channels, grid, out_grid, width, depth, kept)
