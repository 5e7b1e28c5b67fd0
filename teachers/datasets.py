"""Seed datasets: the real images the teacher learns from and the generator augments.

Every dataset comes back as uint8 images [N, C, H, W] with int64 labels, split into train and a real
test split that nothing trains on. Nothing is downloaded here: `digits` ships with scikit-learn, and
torchvision datasets are read from `root`, where the user keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SeedData:
    train_images: np.ndarray  # uint8 [N, C, H, W]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train_images.shape[1:])  # type: ignore[return-value]


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
            raise ValueError(f"{name} was not found under teacher.data_root={root!r} ({exc}).") from exc

        def arrays(ds):
            images = np.asarray(ds.data)
            images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # HWC -> CHW
            return np.ascontiguousarray(images, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)

        return SeedData(*arrays(train), *arrays(test), list(train.classes))

    return load


DATASETS = {
    "digits": _digits,
    "mnist": _torchvision("mnist"),
    "fashion_mnist": _torchvision("fashion_mnist"),
    "cifar10": _torchvision("cifar10"),
}


def load_seed_dataset(name: str, root: str | None = None, test_fraction: float = 0.25, seed: int = 0) -> SeedData:
    """Load a seed dataset by name. Raises ValueError with a user-facing sentence when unavailable."""
    if name not in DATASETS:
        raise ValueError(f"teacher.dataset {name!r} is unknown; expected one of: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name](root, test_fraction, seed)
