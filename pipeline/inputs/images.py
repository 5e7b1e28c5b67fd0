"""The image input space: generation, storage (uint8 pixels) and decoding to the float models take.

Generating inputs: augmented views of real images, mixups of two, and smooth random patterns, each
drawn as a recipe and rendered from it (pipeline/inputs/image_recipes.py). `generate_inputs` is a
pure function of (seed images, data config, seed, count): same arguments, same bytes.

Why not `torchvision.transforms.v2.RandomAffine` per image: it draws one parameter set per call, so
a batch would share one transform, and a Python loop over images costs more than labeling them.
Instead each image gets its own affine parameters and one `grid_sample` warps the whole batch.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from pipeline.config import DataConfig
from pipeline.inputs import image_recipes

NAME = "images"
STORED_DTYPE = np.uint8  # pixels exactly as the teacher saw them; a quarter of float32's bytes

AUGMENT, MIXUP, NOISE = image_recipes.AUGMENT, image_recipes.MIXUP, image_recipes.NOISE


def shard_seed(base_seed: int, split: str, index: int) -> int:
    """A well-mixed 63-bit seed for (base seed, split, shard index); independent streams per shard."""
    split_id = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([base_seed, split_id, index]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def random_affine(x: torch.Tensor, g: torch.Generator, cfg: DataConfig) -> torch.Tensor:
    """Warp each image of float [N, C, H, W] by its own rotation, scale, shear and translation."""
    return image_recipes.warp(x, image_recipes.view_parameters(g, x.shape[0], cfg))


def augment(x: torch.Tensor, g: torch.Generator, cfg: DataConfig) -> torch.Tensor:
    """A random affine warp per image, then Gaussian pixel noise (the teacher's training augmentation,
    and the warps of active rounds' proposals)."""
    x = random_affine(x, g, cfg)
    return x + cfg.pixel_noise * torch.randn(x.shape, generator=g)


def generate_recipes(seed_images: np.ndarray, cfg: DataConfig, seed: int, count: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` inputs as uint8 [count, C, H, W], their kinds (int8 indices into KINDS) and the recipes
    that remake them (pipeline/inputs/image_recipes.py)."""
    recipes = image_recipes.draw(len(seed_images), tuple(seed_images.shape[1:]), cfg, seed, count)
    return image_recipes.render(recipes, seed_images), image_recipes.kinds_of(recipes), recipes


def generate_inputs(seed_images: np.ndarray, cfg: DataConfig, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` inputs as uint8 [count, C, H, W] and their kinds (int8 indices into KINDS)."""
    return generate_recipes(seed_images, cfg, seed, count)[:2]


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
