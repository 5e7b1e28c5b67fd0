"""Seed data: the real inputs the teacher learns from and the generator augments.

Sources (`teacher.dataset`)
  digits                       scikit-learn's bundled 8x8 digits (the default; offline)
  mnist, fashion_mnist, cifar10  torchvision datasets read from teacher.data_root (never downloaded)
  a directory                  an image folder: root/<class>/*.png|jpg (torchvision's ImageFolder
                               layout, the class from the folder name), or images directly under
                               root (unlabeled); any size and channel count, `image_size` resizes
  a .npz file                  arrays `images` ([N, H, W], [N, H, W, C] or [N, C, H, W]) and,
                               optionally, `labels` (int) and `classes` (names)
  a .parquet file              a column `image` (encoded PNG/JPEG bytes, or nested lists of pixels)
                               and, optionally, `label`

Every source comes back as uint8 images [N, C, H, W] with int64 labels (or none), split into train
and a real test split that nothing trains on: held out here (`test_fraction`), or read from the
user's own `test_data` (a folder or file of the same kinds), whose labels are matched with the
training data's classes by name. Nothing is downloaded.

`load_seed` gives a run's seed data from its config: for a vector space, a few points of its box.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.inputs.image_files import decode_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PROBE_ROWS = 2  # seed inputs every imported teacher is run on before it is accepted


@dataclass
class SeedData:
    train_images: np.ndarray  # uint8 [N, C, H, W]
    train_labels: np.ndarray | None  # int64 [N]; None when the data has no labels
    test_images: np.ndarray
    test_labels: np.ndarray | None
    classes: list[str] | None  # class names, where the data has labels
    space: str = "images"  # the input space the rows belong to (pipeline.inputs.space)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.train_images.shape[1:])

    @property
    def labeled(self) -> bool:
        return self.train_labels is not None


@dataclass
class Arrays:
    """Images with optional labels, before the split."""

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str] | None


def _split(data: Arrays, test_fraction: float, seed: int) -> tuple[Arrays, Arrays]:
    from sklearn.model_selection import train_test_split

    n = len(data.images)
    if n < 2:
        raise ValueError(f"the seed data holds {n} image(s); expected at least 2 (some to train on, some held out).")
    index = np.arange(n)
    stratify = data.labels if data.labels is not None and np.bincount(data.labels).min() >= 2 else None
    train, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=stratify)
    pick = lambda idx: Arrays(data.images[np.sort(idx)],  # noqa: E731
                              None if data.labels is None else data.labels[np.sort(idx)], data.classes)
    return pick(train), pick(test)


def _digits(root: str | None, test_fraction: float, seed: int) -> SeedData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are counts 0..16; scale to the full uint8 range like any other image.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return SeedData(x_train, y_train, x_test, y_test, [str(i) for i in range(10)])


def _torchvision(name: str):
    def load(root: str | None, test_fraction: float, seed: int) -> SeedData:
        import torchvision

        cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST,
               "cifar10": torchvision.datasets.CIFAR10}[name]
        if root is None:
            raise ValueError(f"teacher.data_root must name the directory holding the {name} dataset (it is not downloaded).")
        try:
            train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
            raise ValueError(f"{name} was not found under teacher.data_root={root!r}: expected torchvision's "
                             f"{name} files there (nothing is downloaded).") from exc

        def arrays(ds):
            images = np.asarray(ds.data)
            images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # HWC -> CHW
            return np.ascontiguousarray(images, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)

        return SeedData(*arrays(train), *arrays(test), list(train.classes))

    return load


def _to_nchw_uint8(images: np.ndarray, source: str) -> np.ndarray:
    """[N, H, W], [N, H, W, C] or [N, C, H, W] of uint8 (or floats in [0, 1]) as uint8 [N, C, H, W]."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"{source} holds images of shape {list(images.shape)}; expected [N, H, W], [N, H, W, C] or [N, C, H, W].")
    # Channels last when the last axis looks like channels and the first does not, or looks more so
    # (fewer): [N, 32, 32, 3] and [N, 4, 4, 3] are HWC, [N, 3, 32, 32] and [N, 3, 4, 4] CHW.
    last, first = images.shape[-1], images.shape[1]
    if last in (1, 3, 4) and (first not in (1, 3, 4) or last < first):
        images = images.transpose(0, 3, 1, 2)
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.number):
            raise ValueError(f"{source} holds images of type {images.dtype}; expected uint8, or floats in [0, 1].")
        if np.issubdtype(images.dtype, np.floating) and images.size and float(np.nanmax(images)) <= 1.0:
            images = images * 255.0
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(images)


def _image_folder(root: str, image_size: list[int] | None) -> Arrays:
    entries = sorted(os.listdir(root))
    class_dirs = [e for e in entries if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]
    files: list[str] = []
    labels: list[int] | None = []
    if class_dirs:
        for label, name in enumerate(class_dirs):
            folder = os.path.join(root, name)
            found = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.lower().endswith(IMAGE_SUFFIXES)]
            files += found
            labels += [label] * len(found)
        classes: list[str] | None = class_dirs
    else:
        files = [os.path.join(root, f) for f in entries if f.lower().endswith(IMAGE_SUFFIXES)]
        labels, classes = None, None
    if not files:
        raise ValueError(f"image folder {root} holds no images; expected {root}/<class>/*.png (or .jpg), "
                         f"or images directly in {root}.")
    blobs = [open(f, "rb").read() for f in files]
    images = decode_images(blobs, files, image_size)
    return Arrays(images, None if labels is None else np.asarray(labels, dtype=np.int64), classes)


def _npz(path: str) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise ValueError(f"{path} is not a readable .npz file of arrays ({exc}).") from exc
    key = next((k for k in ("images", "inputs", "x") if k in arrays), None)
    if key is None:
        raise ValueError(f"{path} holds the arrays {', '.join(arrays) or 'none'}; expected 'images' (and optionally 'labels').")
    images = _to_nchw_uint8(arrays[key], path)
    labels = next((arrays[k] for k in ("labels", "targets", "y") if k in arrays), None)
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    return Arrays(images, _labels(labels, len(images), path), classes)


def _parquet(path: str, image_size: list[int] | None) -> Arrays:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable Parquet file ({exc}).") from exc
    if "image" not in table.column_names:
        raise ValueError(f"{path} has the columns {', '.join(table.column_names)}; expected 'image' (and optionally 'label').")
    column = table.column("image").combine_chunks()
    import pyarrow as pa

    if pa.types.is_struct(column.type) and "bytes" in [f.name for f in column.type]:
        column = column.field("bytes")  # the {"bytes", "path"} image struct of many dataset exports
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        images = decode_images(column.to_pylist(), [f"{path} row {i}" for i in range(len(column))], image_size)
    else:
        try:
            images = np.asarray(column.to_pylist())
        except ValueError as exc:
            raise ValueError(f"{path}: the 'image' rows differ in shape ({exc}).") from exc
        images = _to_nchw_uint8(images, path)
    labels = np.asarray(table.column("label").to_pylist()) if "label" in table.column_names else None
    return Arrays(images, _labels(labels, len(images), path), None)


def _labels(labels: np.ndarray | None, n: int, source: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or (n and labels.min() < 0):
        raise ValueError(f"{source}: labels must be {n} non-negative integers, one per image, got shape "
                         f"{list(labels.shape)} of {labels.dtype}.")
    return labels.astype(np.int64)


def _from_path(path: str, image_size: list[int] | None) -> Arrays:
    if os.path.isdir(path):
        return _image_folder(path, image_size)
    if not os.path.exists(path):
        raise ValueError(f"seed data {path} does not exist; expected a built-in dataset name, an image folder, "
                         "or a .npz / .parquet file.")
    if path.endswith(".npz"):
        return _npz(path)
    if path.endswith(".parquet"):
        return _parquet(path, image_size)
    raise ValueError(f"seed data {path} is neither a folder nor a .npz or .parquet file.")


def _with_classes(data: Arrays, source: str) -> Arrays:
    top = int(data.labels.max()) if data.labels is not None and len(data.labels) else -1
    if data.labels is not None and data.classes is None:
        data.classes = [str(i) for i in range(top + 1)]
    if data.labels is not None and top >= len(data.classes):
        raise ValueError(f"{source}: labels go up to {top} but only {len(data.classes)} class "
                         "names are given.")
    return data


def _onto_classes(test: Arrays, classes: list[str], source: str, dataset: str) -> Arrays:
    """The test split's labels as indices into the training data's `classes`. A test split that names
    its classes (folder names, an .npz's `classes`) numbers them among themselves, so a class missing
    there, or names sorting another way, would shift every index: they are matched by name. Bare
    integer labels (no names) already are indices into the training data's classes."""
    if test.labels is None:
        return test
    if test.classes is None:
        if len(test.labels) and test.labels.max() >= len(classes):
            raise ValueError(f"teacher.test_data {source} has the label {int(test.labels.max())} but the seed data "
                             f"{dataset} has {len(classes)} classes (labels 0..{len(classes) - 1}).")
        test.classes = list(classes)
        return test
    _with_classes(test, f"teacher.test_data {source}")
    index = {name: i for i, name in enumerate(classes)}
    for label in np.unique(test.labels):  # only classes with images: an empty folder labels nothing
        name = test.classes[label]
        if name not in index:
            folder = os.path.join(source, name)
            where = folder if os.path.isdir(folder) else source
            shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
            raise ValueError(f"teacher.test_data {where} names the class {name!r}, which the seed data {dataset} "
                             f"does not have; expected one of: {shown}.")
    mapping = np.array([index.get(name, -1) for name in test.classes], dtype=np.int64)
    return Arrays(test.images, mapping[test.labels], list(classes))



BUILT_IN = {
    "digits": _digits,
    "mnist": _torchvision("mnist"),
    "fashion_mnist": _torchvision("fashion_mnist"),
    "cifar10": _torchvision("cifar10"),
}


def load_seed_dataset(name: str, root: str | None = None, test_fraction: float = 0.25, seed: int = 0,
                      test_data: str | None = None, image_size: list[int] | None = None) -> SeedData:
    """Load seed data by built-in name or path (see the module docstring). Raises ValueError with a
    user-facing sentence when it is unavailable or malformed."""
    if name in BUILT_IN:
        if test_data is not None:
            raise ValueError(f"teacher.test_data is for your own seed data; {name} brings its own test split.")
        return BUILT_IN[name](root, test_fraction, seed)
    if os.sep not in name and "." not in name and not os.path.exists(name):
        raise ValueError(f"teacher.dataset {name!r} is unknown; expected one of: {', '.join(sorted(BUILT_IN))}, "
                         "an image folder, or a .npz / .parquet file.")
    data = _with_classes(_from_path(name, image_size), name)
    if test_data is None:
        train, test = _split(data, test_fraction, seed)
    else:
        train, test = data, _from_path(test_data, image_size)
        if test.images.shape[1:] != train.images.shape[1:]:
            raise ValueError(f"teacher.test_data {test_data} holds images of shape {list(test.images.shape[1:])}, "
                             f"the seed data {list(train.images.shape[1:])}: they must match (set teacher.image_size).")
        if (test.labels is None) != (train.labels is None):
            raise ValueError(f"teacher.test_data {test_data} and the seed data must both have labels or both have none.")
        test = _onto_classes(test, data.classes, test_data, name)
    return SeedData(train.images, train.labels, test.images, test.labels, data.classes)


def load_seed(cfg: Config) -> SeedData:
    """The seed data of an image space; for a space of generated inputs alone (vectors, fields), a few
    of its inputs stand in for it (what an imported teacher is probed with; there is nothing to train
    on, and no real test data)."""
    t = cfg.teacher
    from pipeline.inputs.space import get_space

    generated = get_space(cfg.data.space).probe_inputs(cfg, PROBE_ROWS)
    if generated is not None:
        return SeedData(generated, None, generated[:0], None, None, space=cfg.data.space)
    try:
        return load_seed_dataset(t.dataset, t.data_root, t.test_fraction, t.seed, t.test_data, t.image_size)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
