"""A small U-Net (Ronneberger et al. 2015) in 1-D and 2-D: a student that maps a field
[B, C, *grid] to a field [C', *grid'], returned flat as [B, C' * prod(grid')].

`depth` times the grid is halved (average pooling) and the channels doubled, from `width` at full
resolution to width * 2**depth at the bottom; the way up mirrors it with transposed convolutions
and skip connections. Each block is two 3-point (3x3) convolutions with GELU.

- No normalisation layers: per-sample norms (GroupNorm, LayerNorm) divide out each field's
  amplitude, which a regression target usually depends on, and BatchNorm behaves differently in
  train and eval.
- `periodic=True` makes every convolution wrap around (circular padding) for fields on a torus.
- A grid axis not divisible by 2**depth is padded at its end up to the next multiple (wrapping
  when periodic, repeating the edge value otherwise) and the output cropped back; `depth` is
  capped at log2 of the smallest axis so that this padding never exceeds the field itself.
- When grid' differs from grid the output is resampled by linear (bilinear in 2-D) interpolation.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from students.fno import field_shapes  # the shape rules are the same for every field student
from students.models import register_student


def block(conv, cin: int, cout: int, padding_mode: str) -> nn.Module:
    return nn.Sequential(conv(cin, cout, 3, padding=1, padding_mode=padding_mode), nn.GELU(),
                         conv(cout, cout, 3, padding=1, padding_mode=padding_mode), nn.GELU())


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, out_grid: tuple[int, ...], width: int,
                 depth: int, periodic: bool, ndim: int):
        super().__init__()
        conv = nn.Conv1d if ndim == 1 else nn.Conv2d
        up = nn.ConvTranspose1d if ndim == 1 else nn.ConvTranspose2d
        mode = "circular" if periodic else "zeros"
        self.out_grid, self.depth, self.periodic = out_grid, depth, periodic
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(block(conv, cin, cout, mode)
                                  for cin, cout in zip([in_channels, *widths[:-1]], widths))
        # Transposed convolutions of kernel 2 and stride 2 exactly undo the pooling's halving.
        self.up = nn.ModuleList(up(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.merge = nn.ModuleList(block(conv, 2 * widths[i], widths[i], mode)
                                   for i in reversed(range(depth)))
        self.head = conv(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        multiple = 2**self.depth
        pad = [(-int(n)) % multiple for n in size]  # int(): a constant when traced for ONNX
        if any(pad):
            # F.pad lists the last axis first, as (before, after) pairs.
            pairs = [p for extra in reversed(pad) for p in (0, extra)]
            x = F.pad(x, pairs, mode="circular" if self.periodic else "replicate")
        pool = F.avg_pool1d if x.dim() == 3 else F.avg_pool2d
        skips = []
        for i, down in enumerate(self.down):
            if i > 0:
                x = pool(x, 2)
            x = down(x)
            skips.append(x)
        skips.pop()  # the bottom level has no skip of its own
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        y = self.head(x)
        y = y[(..., *(slice(0, n) for n in size))]  # drop the padding
        if tuple(y.shape[2:]) != self.out_grid:
            y = F.interpolate(y, size=self.out_grid, mode="linear" if y.dim() == 3 else "bilinear",
                              align_corners=False)
        return y.flatten(1)


@register_student("unet")
def unet(input_shape, num_outputs: int, width: int = 16, depth: int = 3, output_shape=None,
         periodic: bool = False) -> nn.Module:
    """U-Net of `depth` halvings (capped at log2 of the smallest grid axis), `width` channels at
    full resolution doubling per level; circular padding when `periodic`."""
    channels, grid, out_channels, out_grid = field_shapes(input_shape, num_outputs, output_shape)
    depth = max(0, min(depth, int(math.log2(min(grid)))))
    return UNet(channels, out_channels, out_grid, width, depth, periodic, len(grid))
