"""The shard schema: one Parquet file per shard, one row per generated input.

Columns
  sample_id   int64     unique within a split: shard_index * samples_per_shard + row
  shard_seed  int64     the seed the shard's inputs were generated from (constant per shard)
  kind        int8      how the input was made (index into KINDS)
  input       uint8[C*H*W]     the input's pixels, exactly as the teacher saw them (images), or
              float32[D]       the parameter values the simulator was called with (vectors)
or, in a shard of recipes (data.store_inputs; generated images), instead of `input`:
  recipe      float64[R]       what remakes the input from the split's seed images (the input space's)
  input_hash  uint64[1]        the first 8 bytes of the blake2b of the input the teacher saw
  logits      float16[K]       the teacher's raw logits (temperature is a training choice), or
  targets     float32[K]       a regression teacher's outputs (a simulator's), in physical units
or, with label.top_k = k (for teachers with many classes), instead of `logits`:
  topk_values   float16[k]       the k largest raw logits, largest first
  topk_indices  int16|int32[k]   their classes

Each array column is stored as one fixed-size binary value per row (the row's little-endian
elements back to back), its element type in the field's metadata (`distillery.dtype`). Parquet
reads such a column as one block of bytes that numpy views as the array without a pass over its
values; a fixed_size_list<float16> is decoded value by value, several times slower, and on a small
student that shows in the training loop.

Schema metadata (key-value) records the version, the teacher fingerprint, the generator config hash,
the input shape and the split, so a lone file still says where it came from.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa

from pipeline.inputs.space import KINDS  # the `kind` column's values: how an input was made

# 2: `input` is fixed_size_binary (was fixed_size_list<uint8>).
# 3: every array column is fixed_size_binary with its dtype in the field metadata (the logits were
#    fixed_size_list<float16>).
SCHEMA_VERSION = 3
META_PREFIX = "distillery."
DTYPE_KEY = f"{META_PREFIX}dtype".encode()


# A top-k shard leaves out the other classes' logits. Training restores them this far below the
# row's k-th logit: probability e^-30 ~ 1e-13 of the k-th at T = 1, so the loss is the usual one
# on the teacher's distribution renormalised over its top k.
TOPK_FILL_GAP = 30.0


def _index_dtype(num_classes: int) -> np.dtype:
    return np.dtype("<i2") if num_classes <= np.iinfo(np.int16).max else np.dtype("<i4")


def array_field(name: str, dtype: np.dtype | str, width: int) -> pa.Field:
    """A column of `width` elements of `dtype` per row, as fixed-size binary (see the docstring)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    return pa.field(name, pa.binary(width * dtype.itemsize), nullable=False,
                    metadata={DTYPE_KEY: dtype.str.encode()})


def field_dtype(field: pa.Field) -> np.dtype | None:
    """The element type of an array column, None for a scalar one."""
    raw = (field.metadata or {}).get(DTYPE_KEY)
    return None if raw is None else np.dtype(raw.decode())


def _binary_column(values: np.ndarray, field: pa.Field) -> pa.FixedSizeBinaryArray:
    data = np.ascontiguousarray(values, dtype=field_dtype(field))
    return pa.FixedSizeBinaryArray.from_buffers(field.type, len(data), [None, pa.py_buffer(data)])


RECIPE_COLUMNS = ("recipe", "input_hash")  # what a shard of recipes stores instead of `input`


def input_hashes(inputs: np.ndarray) -> np.ndarray:
    """uint64 [n]: each row's blake2b (8 bytes, little-endian), over its bytes as stored."""
    flat = np.ascontiguousarray(inputs).reshape(len(inputs), -1)
    digests = b"".join(hashlib.blake2b(row.data, digest_size=8).digest() for row in flat)
    return np.frombuffer(digests, "<u8").copy()


def shard_schema(input_size: int, num_classes: int, metadata: dict | None = None, top_k: int | None = None,
                 input_dtype=np.uint8, target_column: str = "logits", target_dtype=np.float16,
                 recipe_width: int | None = None) -> pa.Schema:
    fields = [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("shard_seed", pa.int64(), nullable=False),
        pa.field("kind", pa.int8(), nullable=False),
    ]
    if recipe_width is None:
        fields.append(array_field("input", input_dtype, input_size))
    else:
        fields += [array_field("recipe", np.float64, recipe_width), array_field("input_hash", np.uint64, 1)]
    if top_k is None:
        fields.append(array_field(target_column, target_dtype, num_classes))
    else:
        fields += [array_field("topk_values", np.float16, top_k),
                   array_field("topk_indices", _index_dtype(num_classes), top_k)]
    meta = {f"{META_PREFIX}{k}": json.dumps(v) for k, v in (metadata or {}).items()}
    meta[f"{META_PREFIX}schema_version"] = json.dumps(SCHEMA_VERSION)
    return pa.schema(fields, metadata=meta)


def top_k_of(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits of each row, largest first, and their class indices."""
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable")
    indices = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(logits, indices, axis=1), indices


def make_table(
    sample_ids: np.ndarray, shard_seed: int, kinds: np.ndarray, inputs: np.ndarray, logits: np.ndarray, metadata: dict,
    top_k: int | None = None, target_column: str = "logits", recipes: np.ndarray | None = None,
) -> pa.Table:
    """Build a shard table. `inputs` is [n, ...] as the input space stores them (uint8 images, float32
    vectors), `logits` [n, K] as the task stores targets (float16 logits, or float32 regression
    targets in a column named `target_column`); with `top_k`, only the k largest logits of each row
    are kept. With `recipes` ([n, R]), the shard keeps them and the inputs' hashes, not the inputs."""
    n = len(sample_ids)
    flat_inputs = np.ascontiguousarray(inputs).reshape(n, -1)
    logits = np.ascontiguousarray(logits)
    num_classes = logits.shape[1]
    schema = shard_schema(flat_inputs.shape[1], num_classes, metadata, top_k, flat_inputs.dtype, target_column,
                          logits.dtype, None if recipes is None else recipes.shape[1])
    if recipes is None:
        arrays = {"input": flat_inputs}
    else:
        arrays = {"recipe": recipes, "input_hash": input_hashes(flat_inputs)}
    if top_k is None:
        arrays[target_column] = logits
    else:
        arrays["topk_values"], arrays["topk_indices"] = top_k_of(logits, top_k)
    columns = [
        pa.array(sample_ids, pa.int64()),
        pa.array(np.full(n, shard_seed, dtype=np.int64)),
        pa.array(kinds, pa.int8()),
    ] + [_binary_column(arrays[f.name], f) for f in schema if f.name in arrays]
    return pa.Table.from_arrays(columns, schema=schema)


def dense_logits(values: np.ndarray, indices: np.ndarray, num_classes: int) -> np.ndarray:
    """Full float32 logits [n, K] from top-k ones: the missing classes sit TOPK_FILL_GAP below the k-th."""
    values = values.astype(np.float32)
    dense = np.repeat(values[:, -1:] - TOPK_FILL_GAP, num_classes, axis=1)
    np.put_along_axis(dense, indices.astype(np.int64), values, axis=1)
    return dense


def read_metadata(schema: pa.Schema) -> dict:
    raw = schema.metadata or {}
    return {k.decode()[len(META_PREFIX):]: json.loads(v) for k, v in raw.items() if k.decode().startswith(META_PREFIX)}
