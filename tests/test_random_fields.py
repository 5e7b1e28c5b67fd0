"""Field inputs: Gaussian random fields (determinism, resolution, the kernel's statistics) and the
user's own arrays (formats, and the one-sentence errors for each mistake)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.inputs import random_fields as rf
from pipeline.inputs.field_arrays import load_field_arrays


def test_channel_specs_fill_defaults_and_name_the_bad_channel_and_key():
    assert rf.channel_specs([{"length_scale": 0.2}]) == (rf.ChannelSpec(0.2, 1.0, 0.0, True, 2.5, True),)
    assert rf.channel_specs([{"smoothness": None}])[0].smoothness is None
    cases = [({"colour": 1}, "colour"), ({"length_scale": 0}, "length_scale"), ({"amplitude": -1.0}, "amplitude"),
             ({"mean": float("nan")}, "mean"), ({"periodic": "yes"}, "periodic"), ({"smoothness": 0}, "smoothness"),
             ({"length_scale": True}, "length_scale"), ({"random_mean": 0}, "random_mean")]
    for bad, key in cases:
        with pytest.raises(UserError) as err:
            rf.channel_specs([{}, bad])
        assert "channel 1" in str(err.value) and key in str(err.value), str(err.value)
    with pytest.raises(UserError, match="one mapping per channel"):
        rf.channel_specs([])


def test_a_row_depends_only_on_spec_seed_shard_and_row(monkeypatch):
    specs = [{}, {"periodic": False, "length_scale": 0.05}]
    a = rf.sample_fields(specs, (48,), 7, 9, 3, dtype=np.float64)
    assert a.shape == (9, 2, 48) and a.dtype == np.float64
    np.testing.assert_array_equal(a, rf.sample_fields(specs, (48,), 7, 9, 3, dtype=np.float64))
    # Bit for bit whatever the count (odd counts included: two rows share an FFT) and the batching.
    for count in (4, 5, 40):
        np.testing.assert_array_equal(a[:min(count, 9)], rf.sample_fields(specs, (48,), 7, count, 3, np.float64)[:9])
    monkeypatch.setattr(rf, "_BATCH_POINTS", 96)  # batches of 4 and 2 rows
    np.testing.assert_array_equal(a, rf.sample_fields(specs, (48,), 7, 9, 3, dtype=np.float64))
    # A channel does not depend on the other channels' specs; float32 is the float64 field rounded.
    other = rf.sample_fields([{}, {"length_scale": 0.3}], (48,), 7, 9, 3, dtype=np.float64)
    np.testing.assert_array_equal(a[:, 0], other[:, 0])
    np.testing.assert_array_equal(a.astype(np.float32), rf.sample_fields(specs, (48,), 7, 9, 3))


def test_seeds_shards_rows_and_channels_give_independent_fields():
    f = rf.sample_fields([{}, {}], (32,), 1, 1000, 0).astype(np.float64)
    others = {"seed": rf.sample_fields([{}], (32,), 2, 1000, 0)[:, 0], "channel": f[:, 1],
              "shard": rf.sample_fields([{}], (32,), 1, 1000, 1)[:, 0],
              "next row": np.roll(f[:, 0], -1, axis=0)}  # rows 2k and 2k + 1 share an FFT
    for name, other in others.items():
        assert not np.array_equal(f[:, 0], other), name
        # 1000 independent pairs: a correlation's standard error is 1/sqrt(1000) ~ 0.03.
        for point in (0, 17):
            assert abs(np.corrcoef(f[:, 0, point], other[:, point])[0, 1]) < 0.13, name


@pytest.mark.parametrize("spec, coarse, fine, shared", [
    ({}, (64,), (256,), np.s_[..., ::4]),
    ({"smoothness": None, "length_scale": 0.01}, (64,), (256,), np.s_[..., ::4]),  # modes past 64's Nyquist
    ({"periodic": False}, (64,), (192,), np.s_[..., 1::3]),  # cell centres coincide at odd ratios
    ({"smoothness": 1.5}, (32, 32), (64, 64), np.s_[..., ::2, ::2]),
    ({"periodic": False, "length_scale": 0.05}, (16, 16), (48, 48), np.s_[..., 1::3, 1::3]),
])
def test_a_row_is_the_same_field_at_any_resolution(spec, coarse, fine, shared):
    a, b = rf.sample_fields([spec], coarse, 5, 6, 2), rf.sample_fields([spec], fine, 5, 6, 2)
    assert np.abs(a).max() > 0.5
    np.testing.assert_allclose(a, b[shared], rtol=0, atol=1e-5)


def test_pointwise_mean_and_std_are_the_specs():
    specs = [{"mean": 3.0, "amplitude": 2.0, "smoothness": None},
             {"mean": -1.0, "amplitude": 0.5, "periodic": False, "smoothness": 1.5, "length_scale": 0.3}]
    f, n = rf.sample_fields(specs, (16, 16), 11, 2000, 0).astype(np.float64), 2000
    for c, (mean, amp) in enumerate([(3.0, 2.0), (-1.0, 0.5)]):
        # Independent rows: standard errors amp / sqrt(n) for the mean, about amp / sqrt(2n) for the std.
        assert np.abs(f[:, c].mean(0) - mean).max() < 5 * amp / math.sqrt(n)
        assert np.abs(f[:, c].std(0) - amp).max() < 5 * amp / math.sqrt(2 * n)


def test_without_a_random_mean_a_periodic_field_averages_its_mean_and_keeps_its_spread():
    spec = {"mean": 2.0, "amplitude": 0.5, "length_scale": 0.35, "smoothness": 1.5}
    fixed = rf.sample_fields([{**spec, "random_mean": False}], (64,), 5, 2000, 0).astype(np.float64)[:, 0]
    free = rf.sample_fields([spec], (64,), 5, 2000, 0).astype(np.float64)[:, 0]
    # The constant mode is gone: every row's average over the domain is the mean, to float32 rounding.
    assert np.abs(fixed.mean(1) - 2.0).max() < 1e-5
    # With the constant mode the averages spread (at this length scale, most of the variance is there).
    assert free.mean(1).std() > 0.2
    # Either way the pointwise spread is the amplitude (standard error about 0.5 / sqrt(2 * 2000)).
    assert abs(fixed.std(0).mean() - 0.5) < 0.03 and abs(free.std(0).mean() - 0.5) < 0.03


@pytest.mark.parametrize("spec, rho", [
    ({"smoothness": None, "periodic": True}, math.exp(-0.5)),  # squared exponential at lag l
    ({"smoothness": None, "periodic": False}, math.exp(-0.5)),
    ({"smoothness": 1.5, "periodic": False}, (1 + math.sqrt(3)) * math.exp(-math.sqrt(3))),  # Matérn 3/2
    ({"smoothness": 2.5, "periodic": True}, (1 + math.sqrt(5) + 5 / 3) * math.exp(-math.sqrt(5))),
])
def test_correlation_at_one_length_scale_is_the_kernels(spec, rho):
    n, lag = 100, 10  # grid step 0.01: the lag is the length scale, 0.1
    f = rf.sample_fields([{**spec, "length_scale": 0.1, "amplitude": 2.0, "mean": 1.0}], (n,), 3, 1500, 0)
    z = (f[:, 0].astype(np.float64) - 1.0) / 2.0
    products = z * np.roll(z, -lag, axis=1) if spec["periodic"] else z[:, :-lag] * z[:, lag:]
    per_row = products.mean(1)
    # Rows are independent, so the estimate's standard error is the rows' spread / sqrt(rows) (about
    # 0.008 here); 0.005 more covers the periodic images and the truncated modes (both below 1e-3).
    # The kernels differ by 0.04 or more at this lag, and a length scale off by 2 moves rho by 0.2.
    assert abs(per_row.mean() - rho) < 4 * per_row.std() / math.sqrt(len(per_row)) + 0.005


def test_periodic_fields_wrap_smoothly_and_non_periodic_ones_do_not():
    f = rf.sample_fields([{"periodic": True}, {"periodic": False}], (128,), 4, 400, 0).astype(np.float64)
    for c, periodic in enumerate((True, False)):
        step = np.sqrt(np.mean(np.diff(f[:, c], axis=1) ** 2))  # rms difference of neighbours
        wrap = np.sqrt(np.mean((f[:, c, -1] - f[:, c, 0]) ** 2))  # of the last point and the first
        if periodic:  # the same distribution: the estimates' ratio is 1 within ~4% (400 rows)
            assert 0.8 < wrap / step < 1.25
        else:  # a whole domain apart: nearly independent, the difference's rms ~ sqrt(2) amplitudes
            assert wrap / step > 5 and abs(np.corrcoef(f[:, c, 0], f[:, c, -1])[0, 1]) < 0.2


def test_perturb_fields_picks_base_rows_deterministically_and_adds_the_stated_amplitude():
    base = np.stack([np.full((2, 32), 10.0 * i) for i in range(5)])
    specs = [{"amplitude": 0.1, "mean": 100.0}, {"amplitude": 0.3, "periodic": False}]
    f, index = rf.perturb_fields(base, specs, 3, 600, 1)
    assert f.shape == (600, 2, 32) and f.dtype == np.float32 and index.dtype == np.int64
    np.testing.assert_array_equal(index, rf.perturb_fields(base, specs, 3, 600, 1)[1])
    head, head_index = rf.perturb_fields(base, specs, 3, 51, 1)
    np.testing.assert_array_equal(head_index, index[:51])
    np.testing.assert_array_equal(head, f[:51])
    assert not np.array_equal(index, rf.perturb_fields(base, specs, 4, 600, 1)[1])
    assert np.bincount(index, minlength=5).min() > 80  # about uniform: 120 each, sd ~10
    noise = f.astype(np.float64) - base[index]
    assert np.abs(noise).max() < 2  # each row sits on the base row it names
    for c, amp in enumerate((0.1, 0.3)):
        assert abs(noise[:, c].mean()) < 5 * amp / math.sqrt(600)  # the spec's mean is ignored
        assert abs(noise[:, c].std() / amp - 1) < 0.1
    with pytest.raises(UserError, match="2 channel"):
        rf.perturb_fields(base[:, :1], specs, 3, 10, 1)


def test_load_field_arrays_round_trips_npy_npz_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 2, 16))
    np.save(tmp_path / "a.npy", a)
    out = load_field_arrays(str(tmp_path / "a.npy"), expected_grid=(16,))
    assert out.dtype == np.float32 and out.shape == (4, 2, 16)
    np.testing.assert_array_equal(out, a.astype(np.float32))
    b = rng.integers(-5, 5, (3, 8, 8))  # no channel axis: one channel; integers become floats
    np.save(tmp_path / "b.npy", b)
    np.testing.assert_array_equal(load_field_arrays(str(tmp_path / "b.npy"), None, (8, 8)), b[:, None].astype(np.float32))
    np.savez(tmp_path / "one.npz", fields=a)
    np.savez(tmp_path / "two.npz", ic=a, coeff=2 * a)
    np.testing.assert_array_equal(load_field_arrays(str(tmp_path / "one.npz")), a.astype(np.float32))
    np.testing.assert_array_equal(load_field_arrays(str(tmp_path / "one.npz"), "fields"), a.astype(np.float32))
    np.testing.assert_array_equal(load_field_arrays(str(tmp_path / "two.npz"), "coeff", (16,)), (2 * a).astype(np.float32))
    pq.write_table(pa.table({"id": range(4), "field": [row.tolist() for row in a]}), tmp_path / "nested.parquet")
    np.testing.assert_array_equal(load_field_arrays(str(tmp_path / "nested.parquet"), None, (16,)), a.astype(np.float32))
    flat = rng.standard_normal((3, 2 * 8 * 8)).astype(np.float32)  # each row C * H * W numbers
    pq.write_table(pa.table({"u0": [row.tolist() for row in flat]}), tmp_path / "flat.parquet")
    np.testing.assert_array_equal(load_field_arrays(str(tmp_path / "flat.parquet"), "u0", (8, 8)), flat.reshape(3, 2, 8, 8))


def test_load_field_arrays_mistakes_are_one_sentence_user_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def error(name, key=None, grid=None) -> str:
        with pytest.raises(UserError) as err:
            load_field_arrays(str(tmp_path / name), key, grid)
        message = str(err.value)
        assert "\n" not in message and message.endswith(".") and name in message, message
        return message

    nan, big = np.zeros((5, 1, 16)), np.zeros((5, 16))
    nan[3, 0, 7], big[1, 2] = np.nan, 1e300  # 1e300 overflows float32
    arrays = {"good.npy": np.zeros((2, 1, 16)), "nan.npy": nan, "big.npy": big, "flat.npy": np.zeros(16),
              "deep.npy": np.zeros((2, 1, 1, 4, 4)), "text.npy": np.array([["a", "b"]]),
              "complex.npy": np.zeros((2, 16), complex)}
    for name, array in arrays.items():
        np.save(tmp_path / name, array)
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "two.npz", ic=np.zeros((2, 16)), coeff=np.ones((2, 16)))
    (tmp_path / "a.txt").write_text("1 2 3")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "renamed.npy").write_text("not an array")  # a text file under an array's name
    (tmp_path / "renamed.npz").write_text("not an archive")
    pq.write_table(pa.table({"u": [[1.0, 2.0], [3.0]], "v": ["a", "b"]}), tmp_path / "t.parquet")

    assert "does not exist" in error("missing.npy")
    assert "'.txt'" in error("a.txt") and ".npz" in error("a.txt")
    assert all(word in error("two.npz") for word in ("ic", "coeff", "key"))
    assert all(word in error("two.npz", "u") for word in ("'u'", "ic", "coeff"))
    assert "shape (16,)" in error("flat.npy")
    assert "(16,)" in error("good.npy", grid=(32,)) and "(32,)" in error("good.npy", grid=(32,))
    assert all(word in error("deep.npy", grid=(4, 4)) for word in ("shape (2, 1, 1, 4, 4)", "[M, C, 4, 4]"))
    assert "row 3" in error("nan.npy") and "NaN" in error("nan.npy")
    assert "row 1" in error("big.npy", grid=(16,))
    assert "<U1" in error("text.npy") and "real numbers" in error("text.npy")
    assert "complex" in error("complex.npy")
    assert "never unpickled" in error("objects.npy")
    assert "could not be read" in error("junk.npy")
    assert "is not a .npy array file" in error("renamed.npy") and "never unpickled" not in error("renamed.npy")
    assert "is not an .npz archive" in error("renamed.npz")
    assert all(word in error("t.parquet") for word in ("'field'", "u", "v"))
    assert "different lengths" in error("t.parquet", "u")
    assert "lists of numbers" in error("t.parquet", "v")


def test_hdf5_and_zarr_files_round_trip_and_name_their_mistakes(tmp_path):
    h5py = pytest.importorskip("h5py")  # the `arrays` extra, which `dev` installs
    zarr = pytest.importorskip("zarr")
    a = np.random.default_rng(1).standard_normal((3, 2, 16))
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["u"], f["v"] = a, a[:, 0]
        f.create_group("grp")
    with h5py.File(tmp_path / "one.hdf5", "w") as f:
        f["only"] = a
    array = zarr.open(str(tmp_path / "array.zarr"), mode="w", shape=a.shape, dtype="f8")
    array[...] = a
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("u", shape=a.shape, dtype="f8")[...] = a
    group.create_array("v", shape=(3, 16), dtype="f4")[...] = 1
    (tmp_path / "junk.h5").write_bytes(b"not an HDF5 file")
    (tmp_path / "empty.zarr").mkdir()

    expected = a.astype(np.float32)
    for name, key in [("two.h5", "u"), ("one.hdf5", None), ("array.zarr", None), ("group.zarr", "u")]:
        np.testing.assert_array_equal(load_field_arrays(str(tmp_path / name), key, (16,)), expected)
    np.testing.assert_array_equal(load_field_arrays(str(tmp_path / "two.h5"), "v", (16,)), expected[:, :1])

    def error(name, key=None) -> str:
        with pytest.raises(UserError) as err:
            load_field_arrays(str(tmp_path / name), key, (16,))
        message = str(err.value)
        assert "\n" not in message and message.endswith(".") and name in message, message
        return message

    assert all(word in error("two.h5") for word in ("2 datasets", "u", "v", "key"))
    assert "is a group" in error("two.h5", "grp")
    assert all(word in error("group.zarr", "w") for word in ("no array 'w'", "u, v"))
    assert "could not be read as .h5" in error("junk.h5")
    assert "could not be read as .zarr" in error("empty.zarr")


@pytest.mark.parametrize("ext, module", [(".h5", "h5py"), (".zarr", "zarr")])
def test_optional_formats_name_the_package_to_install(tmp_path, monkeypatch, ext, module):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed: importing it fails
    (tmp_path / f"a{ext}").write_bytes(b"")
    with pytest.raises(UserError, match=f"pip install {module}"):
        load_field_arrays(str(tmp_path / f"a{ext}"), "u")
