"""Generated images as recipes: the few numbers that remake one image, and the one renderer that makes it.

A generated image is a pure function of (seed images, its recipe). `draw` draws a shard's recipes from
the shard's seed (one torch.Generator, consumed in a fixed order); `render` makes the pixels of any
rows from their recipes alone. Both storage modes go through `render` (data.store_inputs): `pixels`
stores what it returns; `recipe` stores the recipes (WIDTH float64 values a row) with a hash of the
pixels, and the shard reader renders them again while training (pipeline/shards/recipes.py).

So that a row rendered alone has exactly the bytes it had when the teacher saw it in a batch, every
step works image by image: the warp's sampling grid is computed element by element (affine_grid
would take a batched matrix product, whose rounding may depend on the batch), grid_sample and
interpolate compute each image on its own, and each row's random pixels come from a generator seeded
by the row's own recipe. The thread count matters too: bilinear interpolate rounds differently when
torch splits it across threads (by one unit in the last place, which can move a pixel by one level),
so rendering always runs on one torch thread, as in a DataLoader worker, whatever the process has.
Seeds below 2**53 are exact in float64, and every drawn parameter is a float32, exact in float64 too.

A recipe row (columns in FIELDS order)
  kind                       index into KINDS: augment, mixup or noise
  a_index, a_angle .. a_shift_y, a_noise_seed
                             the view: which seed image, its warp (radians, scale, shift in [-1, 1]
                             image coordinates) and the seed of its pixel noise
  b_...                      mixup: the second view (unused otherwise)
  mix_weight                 mixup: the first view's weight
  noise_sd                   the pixel noise's std (data.pixel_noise)
  grid, contrast, pattern_seed   noise: the coarse grid's side, the contrast, the pattern's seed
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import DataConfig
from pipeline.inputs.space import KINDS
from pipeline.torch_threads import torch_threads

AUGMENT, MIXUP, NOISE = (KINDS.index(k) for k in ("augment", "mixup", "noise"))
VIEW = ("index", "angle", "shear", "scale", "shift_x", "shift_y", "noise_seed")
FIELDS = ("kind", *(f"a_{v}" for v in VIEW), *(f"b_{v}" for v in VIEW), "mix_weight", "noise_sd", "grid",
          "contrast", "pattern_seed")
COLUMN = {name: i for i, name in enumerate(FIELDS)}
WIDTH = len(FIELDS)
DTYPE = np.float64
SEED_LIMIT = 2**53  # row seeds are drawn below this, so float64 holds them exactly
# The libraries whose code makes the pixels; a shard of recipes records their versions.
LIBRARIES = ("torch", "torchvision", "Pillow", "numpy")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def view_parameters(g: torch.Generator, n: int, cfg: DataConfig) -> torch.Tensor:
    """float32 [n, 5]: each image's rotation and shear (radians), scale, and shift (x, y) in
    grid_sample's [-1, 1] coordinates, drawn from the data config's ranges."""
    angle = _uniform(g, n, -cfg.rotation_deg, cfg.rotation_deg) * (math.pi / 180)
    shear = _uniform(g, n, -cfg.shear_deg, cfg.shear_deg) * (math.pi / 180)
    scale = _uniform(g, n, cfg.scale_min, cfg.scale_max)
    # A shift of f image sides is 2f in [-1, 1] coordinates.
    shift = _uniform(g, 2 * n, -2 * cfg.translate, 2 * cfg.translate).view(n, 2)
    return torch.stack([angle, shear, scale, shift[:, 0], shift[:, 1]], 1)


def _axis(size: int) -> torch.Tensor:
    """Pixel centres in [-1, 1] (align_corners=False)."""
    return (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1


def warp(x: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
    """Warp each image of float [N, C, H, W] by its own row of `parameters` (view_parameters)."""
    n, _, height, width = x.shape
    angle, shear, scale, shift_x, shift_y = (p.view(n, 1, 1) for p in parameters.float().unbind(1))
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # Output to input coordinates: (rotation @ shear) / scale, then the shift; element by element.
    xs, ys = _axis(width).view(1, 1, width), _axis(height).view(1, height, 1)
    grid_x = (cos / scale) * xs + ((cos * tan - sin) / scale) * ys + shift_x
    grid_y = (sin / scale) * xs + ((sin * tan + cos) / scale) * ys + shift_y
    grid = torch.stack([grid_x, grid_y], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _row_random(seed) -> np.random.Generator:
    # numpy's SFC64, not a torch.Generator: seeded per row, torch's CPU normals come one at a time,
    # several times slower than numpy's (the noise is most of a large image's rendering).
    return np.random.Generator(np.random.SFC64(int(seed)))


def draw(seed_count: int, shape: tuple[int, ...], cfg: DataConfig, seed: int, count: int) -> np.ndarray:
    """The recipes of `count` generated images (float64 [count, WIDTH]) around `seed_count` seed
    images of `shape` [C, H, W]: a pure function of the arguments."""
    g = torch.Generator().manual_seed(seed)
    recipes = np.zeros((count, WIDTH), DTYPE)
    col = COLUMN

    draw_kind = torch.rand(count, generator=g)
    kinds = torch.full((count,), AUGMENT, dtype=torch.int8)
    kinds[draw_kind < cfg.mixup_fraction + cfg.noise_fraction] = NOISE
    kinds[draw_kind < cfg.mixup_fraction] = MIXUP
    recipes[:, col["kind"]] = kinds.numpy()
    recipes[:, col["noise_sd"]] = np.float32(cfg.pixel_noise)

    def views(rows: np.ndarray, side: str) -> None:
        n = len(rows)
        recipes[rows, col[f"{side}_index"]] = torch.randint(seed_count, (n,), generator=g).numpy()
        recipes[rows, col[f"{side}_angle"]:col[f"{side}_shift_y"] + 1] = view_parameters(g, n, cfg).numpy()
        recipes[rows, col[f"{side}_noise_seed"]] = torch.randint(SEED_LIMIT, (n,), generator=g).numpy()

    views(np.arange(count), "a")
    mix = np.flatnonzero(kinds.numpy() == MIXUP)
    if len(mix):
        views(mix, "b")
        # Beta(a, a) weights: a < 1 favours blends near one of the two images, a = 1 is uniform.
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=g)))
        recipes[mix, col["mix_weight"]] = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha, len(mix)).astype(np.float32)
    noise = np.flatnonzero(kinds.numpy() == NOISE)
    if len(noise):
        height = shape[1]
        recipes[noise, col["grid"]] = torch.randint(2, max(3, height // 2 + 1), (len(noise),), generator=g).numpy()
        recipes[noise, col["contrast"]] = _uniform(g, len(noise), 0.3, 1.0).numpy()
        recipes[noise, col["pattern_seed"]] = torch.randint(SEED_LIMIT, (len(noise),), generator=g).numpy()
    return recipes


def _views(recipes: torch.Tensor, seed_images: np.ndarray, side: str) -> torch.Tensor:
    """Float [n, C, H, W]: each row's seed image under its warp, plus its own pixel noise."""
    col = COLUMN
    picked = seed_images[recipes[:, col[f"{side}_index"]].long().numpy()]  # a copy: writable
    x = warp(torch.from_numpy(picked).float().div_(255), recipes[:, col[f"{side}_angle"]:col[f"{side}_shift_y"] + 1])
    shape = tuple(x.shape[1:])
    noise = torch.from_numpy(np.stack([_row_random(s).standard_normal(shape, dtype=np.float32)
                                       for s in recipes[:, col[f"{side}_noise_seed"]]]))
    return x + recipes[:, col["noise_sd"]].float().view(-1, 1, 1, 1) * noise


def _patterns(recipes: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Float [n, C, H, W]: uniform noise on each row's coarse grid, upsampled, at its contrast."""
    channels, height, width = shape
    out = torch.empty(len(recipes), channels, height, width)
    sizes = recipes[:, COLUMN["grid"]].long()
    for k in sorted(set(sizes.tolist())):  # a handful of distinct grid sizes: one interpolate per size
        rows = (sizes == k).nonzero().flatten()
        coarse = torch.from_numpy(np.stack([_row_random(s).random((channels, k, k), dtype=np.float32)
                                            for s in recipes[rows, COLUMN["pattern_seed"]]]))
        out[rows] = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return out * recipes[:, COLUMN["contrast"]].float().view(-1, 1, 1, 1)


def render(recipes: np.ndarray, seed_images: np.ndarray) -> np.ndarray:
    """The uint8 [n, C, H, W] images of `recipes` (float64 [n, WIDTH]) made from `seed_images`
    (uint8 [N, C, H, W]): the same bytes for a row whatever rows it is rendered with, in whatever
    process (see the module docstring)."""
    with torch_threads(1):
        return _render(recipes, seed_images)


def _render(recipes: np.ndarray, seed_images: np.ndarray) -> np.ndarray:
    r = torch.from_numpy(np.ascontiguousarray(recipes, dtype=DTYPE))
    shape = tuple(seed_images.shape[1:])
    kinds = r[:, COLUMN["kind"]].to(torch.int8)
    out = torch.empty(len(r), *shape)
    viewed = (kinds != NOISE).nonzero().flatten()
    if len(viewed):
        rv = r[viewed]
        x = _views(rv, seed_images, "a")
        mix = (kinds[viewed] == MIXUP).nonzero().flatten()
        if len(mix):
            weight = rv[mix, COLUMN["mix_weight"]].float().view(-1, 1, 1, 1)
            x[mix] = weight * x[mix] + (1 - weight) * _views(rv[mix], seed_images, "b")
        out[viewed] = x
    noise = (kinds == NOISE).nonzero().flatten()
    if len(noise):
        out[noise] = _patterns(r[noise], shape)
    # Quantized here: the teacher labels exactly the uint8 values a pixel shard stores.
    return out.mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()


def kinds_of(recipes: np.ndarray) -> np.ndarray:
    return recipes[:, COLUMN["kind"]].astype(np.int8)
