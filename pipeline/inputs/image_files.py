"""Encoded image files (JPEG, PNG, ...) as uint8 [N, C, H, W] at the size the teacher takes.

JPEG and PNG are decoded by torchvision (libjpeg-turbo and libpng; JPEG on the GPU with nvjpeg where
there is one) and resized there, antialiased: the shorter side to fit, then a centre crop, so no
image is stretched. Other formats (BMP, GIF, TIFF, WebP, ...) go through Pillow. One mode for all:
the most common among the images (read from their headers), so a folder of mostly RGB photos with
a few greyscale ones gives RGB.
"""

from __future__ import annotations

import io

import numpy as np
import torch

JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def _mode(blob: bytes, name: str) -> str:
    """L, RGB or RGBA: what the image holds, from its header (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        mode = Image.open(io.BytesIO(blob)).mode
    except UnidentifiedImageError as exc:
        raise ValueError(f"{name} is not a readable image (not a format Pillow reads).") from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name} is not a readable image ({exc}).") from exc
    if mode in ("1", "L", "I", "I;16", "F"):
        return "L"
    return "RGBA" if mode in ("RGBA", "LA", "PA") else "RGB"


def _with_pillow(blob: bytes, name: str, mode: str) -> torch.Tensor:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(blob))
        image.load()
        pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name} is not a readable image ({exc}).") from exc
    return torch.from_numpy(np.ascontiguousarray(pixels[..., None] if pixels.ndim == 2 else pixels)).permute(2, 0, 1)


def _decode(blob: bytes, name: str, mode: str, device: torch.device) -> torch.Tensor:
    """uint8 [C, H, W] on `device` (JPEG there; others decoded on the CPU and moved)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    read = {"L": ImageReadMode.GRAY, "RGB": ImageReadMode.RGB, "RGBA": ImageReadMode.RGB_ALPHA}[mode]
    data = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    try:
        if blob.startswith(JPEG_MAGIC) and mode != "RGBA":
            return decode_jpeg(data, mode=read, device=device)
        if blob.startswith(PNG_MAGIC):
            image = decode_image(data, mode=read)
            if image.dtype == torch.uint8:  # a 16-bit PNG comes back uint16: Pillow scales it below
                return image.to(device)
    except RuntimeError:  # a corrupt or unusual file: Pillow decodes it or says what is wrong
        pass
    return _with_pillow(blob, name, mode).to(device)


def fit(image: torch.Tensor, size: list[int]) -> torch.Tensor:
    """[C, h, w] resized, antialiased, so that it covers [H, W], then centre-cropped to it."""
    from torchvision.transforms.v2 import functional as TF

    height, width = size
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    scale = max(height / h, width / w)
    covered = [max(height, round(h * scale)), max(width, round(w * scale))]
    return TF.center_crop(TF.resize(image, covered, antialias=True), [height, width])


def decode_images(blobs: list[bytes], names: list[str], image_size: list[int] | None) -> np.ndarray:
    """Encoded images as uint8 [N, C, H, W]; `image_size` ([H, W]) fits each to it, without it every
    image must have the same size. ValueError naming the file for one that cannot be read."""
    if not blobs:
        raise ValueError("no images found")
    modes = [_mode(blob, name) for blob, name in zip(blobs, names)]
    mode = max(set(modes), key=modes.count)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out, first = [], None
    for blob, name in zip(blobs, names):
        image = _decode(blob, name, mode, device)
        if image_size is not None:
            image = fit(image, image_size)
        elif first is None:
            first = (tuple(image.shape[-2:]), name)
        elif tuple(image.shape[-2:]) != first[0]:
            (h, w), (fh, fw) = image.shape[-2:], first[0]
            raise ValueError(f"{name} is {w}x{h} but {first[1]} is {fw}x{fh}: set teacher.image_size [H, W] to "
                             "resize them to one size.")
        out.append(image.cpu())
    return torch.stack(out).numpy()
