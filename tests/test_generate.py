import numpy as np
import pytest

from pipeline.config import DataConfig
from pipeline.inputs.images import AUGMENT, MIXUP, NOISE, generate_inputs, shard_seed
from pipeline.inputs.seeds import load_seed_dataset


@pytest.fixture(scope="module")
def seed_images():
    return load_seed_dataset("digits").train_images


def test_inputs_are_a_pure_function_of_the_seed(seed_images):
    cfg = DataConfig()
    a, ka = generate_inputs(seed_images, cfg, seed=123, count=500)
    b, kb = generate_inputs(seed_images, cfg, seed=123, count=500)
    c, _ = generate_inputs(seed_images, cfg, seed=124, count=500)
    assert a.dtype == np.uint8 and a.shape == (500, 1, 8, 8)
    assert np.array_equal(a, b) and np.array_equal(ka, kb)
    assert not np.array_equal(a, c)


def test_kinds_follow_the_configured_fractions(seed_images):
    cfg = DataConfig(mixup_fraction=0.3, noise_fraction=0.2)
    _, kinds = generate_inputs(seed_images, cfg, seed=0, count=5000)
    assert abs((kinds == MIXUP).mean() - 0.3) < 0.03
    assert abs((kinds == NOISE).mean() - 0.2) < 0.03
    assert abs((kinds == AUGMENT).mean() - 0.5) < 0.03


def test_augmentation_changes_images_but_keeps_them_near_the_originals(seed_images):
    cfg = DataConfig(mixup_fraction=0, noise_fraction=0, pixel_noise=0, rotation_deg=0, shear_deg=0, translate=0,
                     scale_min=1, scale_max=1)
    identity, _ = generate_inputs(seed_images, cfg, seed=5, count=200)
    # With every augmentation off, the generator returns (a random pick of) the real images.
    originals = {img.tobytes() for img in seed_images}
    assert all(img.tobytes() in originals for img in identity)
    augmented, _ = generate_inputs(seed_images, DataConfig(mixup_fraction=0, noise_fraction=0), seed=5, count=200)
    assert sum(img.tobytes() not in originals for img in augmented) > 190


def test_shard_seeds_differ_across_shards_and_splits():
    seeds = {shard_seed(1, split, i) for split in ("train", "heldout") for i in range(100)}
    assert len(seeds) == 200
    assert shard_seed(1, "train", 3) == shard_seed(1, "train", 3)
