"""The vector input space: samplers, determinism, the grid, scaling, and the per-batch time limit."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pipeline.inputs import vectors
from pipeline.label.time_limit import BatchTimeout, time_limit

BOX = vectors.Box(("nu", "A", "scale"), (0.05, 0.2, 1e-3), (0.3, 1.0, 10.0), (False, False, True))


@pytest.mark.parametrize("sampler", ["sobol", "lhs"])
def test_points_are_a_pure_function_of_seed_and_fill_the_box(sampler):
    a = vectors.sample_points(BOX, sampler, seed=7, count=1000)
    assert a.dtype == np.float32 and a.shape == (1000, 3)
    np.testing.assert_array_equal(a, vectors.sample_points(BOX, sampler, seed=7, count=1000))
    assert not np.array_equal(a, vectors.sample_points(BOX, sampler, seed=8, count=1000))
    assert (a >= np.float32(BOX.low)).all() and (a <= np.float32(BOX.high)).all()
    # Each linear parameter's tenths of its range, and the log one's decades, are each hit about equally.
    for j in range(2):
        share = np.histogram(a[:, j], bins=10, range=(BOX.low[j], BOX.high[j]))[0] / 1000
        assert np.abs(share - 0.1).max() < 0.02
    decades = np.histogram(np.log10(a[:, 2]), bins=4, range=(-3, 1))[0] / 1000
    assert np.abs(decades - 0.25).max() < 0.03


def test_the_grid_enumerates_every_point_once_across_shards():
    box = vectors.Box(("x", "y"), (0.0, -1.0), (1.0, 1.0), (False, False))
    shards = [vectors.sample_points(box, "grid", seed=0, count=7, shard_index=i, grid_points=5) for i in range(4)]
    assert [len(s) for s in shards] == [7, 7, 7, 4]  # 25 points; the last shard holds the rest
    points = np.concatenate(shards)
    assert len({tuple(p) for p in points.tolist()}) == 25
    np.testing.assert_allclose(np.unique(points[:, 0]), [0.1, 0.3, 0.5, 0.7, 0.9], atol=1e-6)


def test_the_students_scaling_maps_the_box_to_minus_one_one():
    scale = vectors.BoxScale(BOX)
    corners = torch.tensor([BOX.low, BOX.high], dtype=torch.float32)
    np.testing.assert_allclose(scale(corners).numpy(), [[-1, -1, -1], [1, 1, 1]], atol=1e-5)
    middle = torch.tensor([[0.175, 0.6, 0.1]])  # the log parameter's middle is the geometric mean
    np.testing.assert_allclose(scale(middle).numpy(), [[0, 0, 0]], atol=1e-5)


def test_a_batch_past_its_time_limit_is_interrupted():
    start = time.perf_counter()
    with pytest.raises(BatchTimeout, match="label.timeout_s = 0.2"):
        with time_limit(0.2):
            time.sleep(5)
    assert time.perf_counter() - start < 2
    with time_limit(None):  # no limit: nothing happens
        time.sleep(0.01)
