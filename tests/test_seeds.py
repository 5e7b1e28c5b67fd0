"""Seed data of the user's own: image folders, .npz and Parquet files, their test splits and mistakes."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.inputs.seeds import load_seed_dataset


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_parquet_of_encoded_images_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 6, 5, 3), dtype=np.uint8)
    table = pa.table({"image": [png(i) for i in images], "label": [i % 3 for i in range(12)]})
    pq.write_table(table, tmp_path / "seed.parquet")
    seed = load_seed_dataset(str(tmp_path / "seed.parquet"), test_fraction=0.25)
    assert seed.input_shape == (3, 6, 5) and seed.classes == ["0", "1", "2"]
    assert len(seed.train_images) == 9 and len(seed.test_images) == 3
    together = np.concatenate([seed.train_images, seed.test_images]).transpose(0, 2, 3, 1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, images))  # every image, exactly


def test_npz_layouts_and_float_pixels(tmp_path):
    nhwc = np.random.default_rng(1).random((10, 4, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", images=nhwc, labels=np.arange(10) % 2, classes=np.array(["cat", "dog"]))
    seed = load_seed_dataset(str(tmp_path / "a.npz"))
    assert seed.input_shape == (3, 4, 4) and seed.classes == ["cat", "dog"] and seed.train_images.dtype == np.uint8
    np.savez(tmp_path / "gray.npz", images=np.zeros((6, 8, 8), np.uint8))
    assert load_seed_dataset(str(tmp_path / "gray.npz")).input_shape == (1, 8, 8)


def test_folder_with_a_test_folder_and_resizing(tmp_path):
    for root, n in (("train", 4), ("test", 2)):
        for name in ("a", "b"):
            (tmp_path / root / name).mkdir(parents=True)
            for i in range(n):
                size = (10, 12) if i % 2 else (20, 16)  # images of two sizes
                Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(tmp_path / root / name / f"{i}.jpg")
    with pytest.raises(ValueError, match="set teacher.image_size"):
        load_seed_dataset(str(tmp_path / "train"))
    seed = load_seed_dataset(str(tmp_path / "train"), test_data=str(tmp_path / "test"), image_size=[8, 8])
    assert seed.input_shape == (3, 8, 8) and len(seed.train_images) == 8 and len(seed.test_images) == 4
    assert list(seed.test_labels) == [0, 0, 1, 1] and seed.classes == ["a", "b"]


@pytest.mark.parametrize("write, expected", [
    (lambda p: (p / "seed.npz").write_bytes(b"not a zip"), "is not a readable .npz"),
    (lambda p: np.savez(p / "seed.npz", pixels=np.zeros((2, 2, 2))), "expected 'images'"),
    (lambda p: np.savez(p / "seed.npz", images=np.zeros((4, 2, 2)), labels=np.zeros(3)), "labels must be 4"),
    (lambda p: (p / "seed.parquet").write_bytes(b"PAR1 broken"), "is not a readable Parquet file"),
    (lambda p: (p / "seed").mkdir(), "holds no images"),
    (lambda p: None, "does not exist"),
])
def test_malformed_seed_data_is_one_sentence(tmp_path, write, expected):
    write(tmp_path)
    target = next((str(p) for p in tmp_path.iterdir()), str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match=expected):
        load_seed_dataset(target)
