"""Reading a user's own field arrays (data.fields.base): float32 [M, C, *grid].

Formats, by extension:
  .npy            one array (np.load with allow_pickle=False: a file of Python objects is refused)
  .npz            the array named `key`, or the only one
  .parquet        the column `key` (default `field`): one row per array, each a list, or nested
                  lists, of numbers; a flat list of C * prod(grid) numbers is cut by the grid
  .h5, .hdf5      the dataset `key`, or the only one at the top level (needs h5py)
  .zarr           the array itself, or the array `key` of a group (needs zarr)
An array [M, *grid] has no channel axis and is read as one channel. Without expected_grid a 2-D array
is [M, N] and a 3-D one [M, C, N]: the grid settles [M, H, W] against [M, C, N].
Nothing is ever unpickled; every mistake is a UserError of one sentence naming the file.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from pipeline.errors import UserError

EXTENSIONS = (".npy", ".npz", ".parquet", ".h5", ".hdf5", ".zarr")


def _choose(path: str, key: str | None, names: list[str], what: str) -> str:
    """The name to read: `key`, or the only one there is."""
    if key is None:
        if len(names) == 1:
            return names[0]
        raise UserError(f"{path} holds {len(names)} {what}s ({', '.join(names) or 'none'}); "
                        f"expected one, or a key naming which to read.")
    if key not in names:
        raise UserError(f"{path} has no {what} {key!r}; it has: {', '.join(names) or 'none'}.")
    return key


def _needs(module: str, path: str):
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"reading {path} needs the {module} package; install it with "
                        f"`pip install {module}`.") from None


def _refuse_pickles(path: str, exc: ValueError):
    """Object arrays need unpickling, which np.load refuses with allow_pickle=False: say so plainly."""
    if "allow_pickle" in str(exc):
        return UserError(f"{path} holds Python objects, which are never unpickled; expected a numeric array.")
    return exc


MAGIC = {".npy": (b"\x93NUMPY", "a .npy array file"), ".npz": (b"PK\x03\x04", "an .npz archive")}


def _check_magic(path: str, suffix: str) -> None:
    """A file that is not what its extension says: np.load would take it for a pickle and say so."""
    magic, what = MAGIC[suffix]
    with open(path, "rb") as f:
        if f.read(len(magic)) != magic:
            raise UserError(f"{path} is not {what} (its first bytes are not numpy's); expected an array saved "
                            f"with numpy.{'save' if suffix == '.npy' else 'savez'}.")


def _npy(path: str, key: str | None) -> np.ndarray:
    _check_magic(path, ".npy")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise _refuse_pickles(path, exc) from None


def _npz(path: str, key: str | None) -> np.ndarray:
    _check_magic(path, ".npz")
    with np.load(path, allow_pickle=False) as npz:
        name = _choose(path, key, list(npz.files), "array")
        try:
            return npz[name]
        except ValueError as exc:
            raise _refuse_pickles(path, exc) from None


def _parquet(path: str, key: str | None, grid: tuple | None) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = _choose(path, key or "field", pq.read_schema(path).names, "column")
    values = pq.read_table(path, columns=[column]).column(column).combine_chunks()
    shape = [len(values)]
    # Walk down the nested lists, checking that every row has the same lengths at every level.
    while any(test(values.type) for test in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)):
        if values.null_count:
            raise UserError(f"{path} column {column!r} has missing (null) entries; "
                            f"expected a list of numbers in every row.")
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise UserError(f"{path} column {column!r} has lists of different lengths ({lengths.min()} to "
                            f"{lengths.max()}); expected the same shape in every row.")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        values = values.flatten()
    if len(shape) == 1 or not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise UserError(f"{path} column {column!r} is of type {values.type}; expected lists of numbers.")
    if values.null_count:
        raise UserError(f"{path} column {column!r} has missing (null) numbers; expected numbers everywhere.")
    array = values.to_numpy(zero_copy_only=False).reshape(shape)
    if array.ndim == 2 and grid and array.shape[1] % int(np.prod(grid)) == 0:  # flat rows: C * prod(grid)
        array = array.reshape(len(array), array.shape[1] // int(np.prod(grid)), *grid)
    return array


def _h5(path: str, key: str | None) -> np.ndarray:
    h5py = _needs("h5py", path)
    with h5py.File(path, "r") as f:
        names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)] if key is None else list(f.keys())
        name = _choose(path, key, names, "dataset")
        if not isinstance(f[name], h5py.Dataset):
            raise UserError(f"{path} entry {name!r} is a group; expected a dataset of numbers.")
        return np.asarray(f[name][()])


def _zarr(path: str, key: str | None) -> np.ndarray:
    zarr = _needs("zarr", path)
    node = zarr.open(path, mode="r")
    if hasattr(node, "shape"):  # the store is an array itself
        return np.asarray(node[...])
    name = _choose(path, key, sorted(node.array_keys()), "array")
    return np.asarray(node[name][...])


def _as_fields(array: np.ndarray, path: str, grid: tuple | None) -> np.ndarray:
    """[M, C, *grid] float32, or a UserError saying what is wrong with `array`."""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise UserError(f"{path} holds values of type {array.dtype}; expected real numbers (floats or integers).")
    d = len(grid) if grid else None
    ndim = array.ndim
    if d is None and ndim in (2, 3, 4):
        array = array[:, None] if ndim == 2 else array
    elif d is not None and ndim in (d + 1, d + 2):
        array = array[:, None] if ndim == d + 1 else array
    else:
        layout = "[M, C, *grid] or [M, *grid] on a 1-D or 2-D grid" if d is None else \
            f"[M, C, {', '.join(map(str, grid))}] or [M, {', '.join(map(str, grid))}]"
        raise UserError(f"{path} holds an array of shape {tuple(array.shape)}; expected {layout}.")
    if grid is not None and tuple(array.shape[2:]) != tuple(int(n) for n in grid):
        raise UserError(f"{path} holds fields on the grid {tuple(array.shape[2:])}; expected the grid "
                        f"{tuple(int(n) for n in grid)} of data.fields.grid.")
    if len(array) == 0 or array.shape[1] == 0:
        raise UserError(f"{path} holds an array of shape {tuple(array.shape)}; "
                        f"expected at least one field and one channel.")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(array, dtype=np.float32)
    # Checked after the cast: float64 values beyond float32's range become inf there.
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if bad.any():
        raise UserError(f"{path} row {int(np.argmax(bad))} has NaN or infinite values (or values too large for "
                        f"float32); expected finite numbers.")
    return out


def load_field_arrays(path: str, key: str | None = None, expected_grid: tuple | None = None) -> np.ndarray:
    """The user's arrays at `path` as float32 [M, C, *grid] (see the module docstring)."""
    path = os.fspath(path)
    ext = os.path.splitext(path.rstrip("/\\"))[1].lower()
    if ext not in EXTENSIONS:
        raise UserError(f"{path} has the extension {ext or '(none)'!r}; expected one of {', '.join(EXTENSIONS)}.")
    if not os.path.exists(path):
        raise UserError(f"field arrays file {path} does not exist; expected a file of your arrays.")
    grid = tuple(int(n) for n in expected_grid) if expected_grid is not None else None
    try:
        if ext == ".parquet":
            array = _parquet(path, key, grid)
        else:
            array = {".npy": _npy, ".npz": _npz, ".h5": _h5, ".hdf5": _h5, ".zarr": _zarr}[ext](path, key)
    except UserError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:  # truncated, or not what its name says
        detail = str(exc).splitlines()[0].split(". ")[0].rstrip(".") if str(exc) else type(exc).__name__
        raise UserError(f"{path} could not be read as {ext} ({detail}); expected a valid {ext} file.") from None
    return _as_fields(np.asarray(array), path, grid)
