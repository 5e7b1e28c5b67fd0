"""The image input space: generation, storage (uint8 pixels) and decoding to the float models take.

Generating inputs: augmented views of real images, mixups of two, and smooth random patterns.

`generate_inputs` is a pure function of (seed images, data config, seed, count): same arguments,
same bytes. All randomness comes from one `torch.Generator` consumed in a fixed order, and every op
used is deterministic on CPU.

Why not `torchvision.transforms.v2.RandomAffine` per image: it draws one parameter set per call, so
a batch would share one transform, and a Python loop over images costs more than labeling them.
Instead each image gets its own affine matrix and one `grid_sample` warps the whole batch.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.config import DataConfig
from pipeline.inputs.space import KINDS

NAME = "images"
STORED_DTYPE = np.uint8  # pixels exactly as the teacher saw them; a quarter of float32's bytes

AUGMENT, MIXUP, NOISE = (KINDS.index(k) for k in ("augment", "mixup", "noise"))


def shard_seed(base_seed: int, split: str, index: int) -> int:
    """A well-mixed 63-bit seed for (base seed, split, shard index); independent streams per shard."""
    split_id = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([base_seed, split_id, index]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def random_affine(x: torch.Tensor, g: torch.Generator, cfg: DataConfig) -> torch.Tensor:
    """Warp each image of float [N, C, H, W] by its own rotation, scale, shear and translation."""
    n = x.shape[0]
    angle = _uniform(g, n, -cfg.rotation_deg, cfg.rotation_deg) * (math.pi / 180)
    shear = _uniform(g, n, -cfg.shear_deg, cfg.shear_deg) * (math.pi / 180)
    scale = _uniform(g, n, cfg.scale_min, cfg.scale_max)
    # affine_grid works in [-1, 1] coordinates, so a shift of f image sides is 2f.
    shift = _uniform(g, 2 * n, -2 * cfg.translate, 2 * cfg.translate).view(n, 2)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # theta maps output to input coordinates: (rotation @ shear) / scale, then the shift.
    theta = torch.stack([
        torch.stack([cos / scale, (cos * tan - sin) / scale, shift[:, 0]], 1),
        torch.stack([sin / scale, (sin * tan + cos) / scale, shift[:, 1]], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(x: torch.Tensor, g: torch.Generator, cfg: DataConfig) -> torch.Tensor:
    """The generator's augmentation: a random affine warp per image, then Gaussian pixel noise."""
    x = random_affine(x, g, cfg)
    return x + cfg.pixel_noise * torch.randn(x.shape, generator=g)


def smooth_noise(g: torch.Generator, n: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Random patterns at random coarseness: uniform noise on a k x k grid, upsampled to H x W."""
    channels, height, width = shape
    out = torch.empty(n, channels, height, width)
    sizes = torch.randint(2, max(3, height // 2 + 1), (n,), generator=g)
    contrast = _uniform(g, n, 0.3, 1.0).view(n, 1, 1, 1)
    for k in sorted(set(sizes.tolist())):  # a handful of distinct grid sizes: loop over sizes, not images
        rows = (sizes == k).nonzero().flatten()
        coarse = torch.rand(len(rows), channels, k, k, generator=g)
        out[rows] = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return out * contrast


def generate_inputs(seed_images: np.ndarray, cfg: DataConfig, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` inputs as uint8 [count, C, H, W] and their kinds (int8 indices into KINDS)."""
    g = torch.Generator().manual_seed(seed)
    shape = tuple(seed_images.shape[1:])

    def views(n: int) -> torch.Tensor:
        """n random seed images, each under its own random affine warp."""
        picked = seed_images[torch.randint(len(seed_images), (n,), generator=g).numpy()]  # a copy: writable
        return augment(torch.from_numpy(picked).float().div_(255), g, cfg)

    draw = torch.rand(count, generator=g)
    kinds = torch.full((count,), AUGMENT, dtype=torch.int8)
    kinds[draw < cfg.mixup_fraction + cfg.noise_fraction] = NOISE
    kinds[draw < cfg.mixup_fraction] = MIXUP

    x = views(count)

    mix = (kinds == MIXUP).nonzero().flatten()
    if len(mix):
        partner = views(len(mix))
        # Beta(a, a) weights: a < 1 favours blends near one of the two images, a = 1 is uniform.
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=g)))
        weight = torch.from_numpy(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha, len(mix))).float().view(-1, 1, 1, 1)
        x[mix] = weight * x[mix] + (1 - weight) * partner

    noise = (kinds == NOISE).nonzero().flatten()
    if len(noise):
        x[noise] = smooth_noise(g, len(noise), shape)

    # Quantize here: the teacher labels exactly the uint8 values that the shard stores.
    return x.mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy(), kinds.numpy()


# Decoding: the one place that knows pixels are uint8 and models take floats in [0, 1].

def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float in [0, 1]."""
    return pixels.float().div_(255)


def decode_numpy(stored: np.ndarray, shape) -> np.ndarray:
    """Stored rows (uint8, any layout of C*H*W values per row) → float32 [B, C, H, W] in [0, 1]."""
    # Divided, not multiplied by 1/255: bit for bit what ImageDecode (and torch's div) computes.
    return (np.asarray(stored, dtype=np.float32) / np.float32(255)).reshape(-1, *shape)


class ImageDecode(torch.nn.Module):
    """The same decoding as a module, so it runs where the model runs (on the GPU: only bytes cross)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored.reshape(-1, *self.shape).float().div(255)


THUMB_PX = 112  # a thumbnail's longer side is at least this many pixels


def sparkline(values: np.ndarray, width: int = 160, height: int = 64) -> bytes:
    """A 1-D series as a small black-on-white line, PNG bytes (a 1-D field's thumbnail)."""
    from PIL import ImageDraw

    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    ys = (height - 4) * (1 - (v - lo) / ((hi - lo) or 1.0)) + 2
    xs = np.linspace(2, width - 3, len(v))
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).line(list(zip(xs.tolist(), ys.tolist())), fill=0, width=1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail(x: np.ndarray) -> bytes:
    """A stored image ([C, H, W] or [H, W]; uint8, else stretched to 0..255) as PNG bytes: RGB for
    three channels, grey otherwise (the first channel)."""
    x = x[None] if x.ndim == 2 else x
    if x.dtype != np.uint8:
        lo, hi = float(np.min(x)), float(np.max(x))
        x = np.round((x - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8)
    pixels = x.transpose(1, 2, 0) if x.shape[0] == 3 else x[0]
    image = Image.fromarray(np.ascontiguousarray(pixels))
    factor = max(1, math.ceil(THUMB_PX / max(image.size)))
    image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
