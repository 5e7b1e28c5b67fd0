"""Shards of recipes: the seed-image file beside them, and remaking their inputs for a reader.

A shard labeled with data.store_inputs = recipe keeps, per row, what remakes its input (the input
space's recipe) and a hash of the input the teacher saw (schema.py). Its split keeps the seed images
the recipes start from in one file (SEED_FILE, recorded in the manifest with its sha256 and the
versions of the libraries that made the inputs). Readers hand out `input` as if it were stored:
`InputRemaker` renders each row again and refuses, with one sentence naming the cause, any row
whose input hashes differently, so nothing trains or is scored on an input the teacher did not see.
"""

from __future__ import annotations

import io

import numpy as np

from pipeline.errors import UserError
from pipeline.inputs.space import get_space
from pipeline.run import storage
from pipeline.shards.manifest import Manifest, check_seed_file, repair_command, sha256_of
from pipeline.shards.schema import input_hashes

SEED_FILE = "seed-images.npy"
_seed_cache: dict[tuple[str, str], np.ndarray] = {}  # (path, sha256) -> seed images, per process


def seed_file_bytes(seed_images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(seed_images), allow_pickle=False)
    return buffer.getvalue()


def write_seed_file(split_dir: str, seed_images: np.ndarray, libraries: dict[str, str]) -> dict:
    """Write the split's seed images (atomically, unless the file already holds these bytes) and
    return the manifest's `recipe` entry for them."""
    data = seed_file_bytes(seed_images)
    entry = {"file": SEED_FILE, "sha256": sha256_of(data), "bytes": len(data), "libraries": dict(libraries)}
    path = storage.join(split_dir, SEED_FILE)
    if not storage.exists(path) or sha256_of(storage.read_bytes(path)) != entry["sha256"]:
        storage.write_bytes_atomic(path, data)
    return entry


def _differing_libraries(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    return [f"{name} {recorded[name]} then, {current.get(name, 'absent')} now" for name in sorted(recorded)
            if recorded[name] != current.get(name, "absent")]


class InputRemaker:
    """Stored inputs from recipe rows of one split, each checked against its hash. Cheap to pickle
    (a loader worker loads the seed images itself, once, on first use)."""

    def __init__(self, split_dir: str, manifest: Manifest):
        self.split_dir, self.manifest = split_dir, manifest
        self.space = manifest.input_space

    def seed_images(self) -> np.ndarray:
        entry = self.manifest.recipe
        if not entry:
            raise UserError(f"{self.split_dir} holds shards of recipes but its manifest names no seed images: "
                            "label the data again into a new output directory.")
        key = (storage.join(self.split_dir, entry["file"]), entry["sha256"])
        if key not in _seed_cache:
            problem = check_seed_file(self.split_dir, self.manifest)
            if problem:
                raise UserError(f"{problem}; write it again with `{repair_command(self.split_dir)}`.")
            _seed_cache[key] = np.load(io.BytesIO(storage.read_bytes(key[0])), allow_pickle=False)
        return _seed_cache[key]

    def inputs(self, recipes: np.ndarray, hashes: np.ndarray, source: str) -> np.ndarray:
        """The stored inputs, flat [n, C*H*W], that `recipes` remake; a UserError if any differs from
        the input the teacher labeled (its hash in `hashes`)."""
        space = get_space(self.space)
        made = np.ascontiguousarray(space.remake(recipes, self.seed_images())).reshape(len(recipes), -1)
        wrong = np.flatnonzero(input_hashes(made) != np.asarray(hashes).reshape(-1))
        if len(wrong):
            raise UserError(self._mismatch(len(wrong), len(recipes), source, space))
        return made

    def _mismatch(self, wrong: int, rows: int, source: str, space) -> str:
        recorded = (self.manifest.recipe or {}).get("libraries", {})
        differ = _differing_libraries(recorded, space.recipe_libraries())
        head = (f"{wrong} of {rows} inputs remade from the recipes in {source} differ from the inputs the teacher "
                "labeled (their hashes do not match), so nothing was trained or scored on them")
        if differ:
            return (f"{head}: the libraries that make inputs changed since labeling ({'; '.join(differ)}); install "
                    "the recorded versions, or label again into a new output directory with --data.store_inputs pixels.")
        return (f"{head}: the libraries are the recorded versions, so the recipes do not remake their inputs on this "
                "machine; label again into a new output directory with --data.store_inputs pixels.")
