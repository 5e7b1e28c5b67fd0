"""The shard schema: one Parquet file per shard, one row per generated input.

Columns
  sample_id   int64     unique within a split: shard_index * samples_per_shard + row
  shard_seed  int64     the seed the shard's inputs were generated from (constant per shard)
  kind        int8      how the input was made (index into KINDS)
  input       fixed_size_binary[C*H*W]        the input's uint8 pixels, exactly as the teacher saw them
  logits      fixed_size_list<float16>[K]     the teacher's raw logits (temperature is a training choice)
or, with label.top_k = k (for teachers with many classes), instead of `logits`:
  topk_values   fixed_size_list<float16>[k]   the k largest raw logits, largest first
  topk_indices  fixed_size_list<int16|int32>[k]  their classes

Schema metadata (key-value) records the version, the teacher fingerprint, the generator config hash,
the input shape and the split, so a lone file still says where it came from.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

# 2: `input` is fixed_size_binary (was fixed_size_list<uint8>): it decodes to numpy without a
#    per-value pass, which the training loop notices on a small student.
SCHEMA_VERSION = 2
KINDS = ("augment", "mixup", "noise")
META_PREFIX = "distillery."


# A top-k shard leaves out the other classes' logits. Training restores them this far below the
# row's k-th logit: probability e^-30 ~ 1e-13 of the k-th at T = 1, so the loss is the usual one
# on the teacher's distribution renormalised over its top k.
TOPK_FILL_GAP = 30.0


def _index_type(num_classes: int) -> pa.DataType:
    return pa.int16() if num_classes <= np.iinfo(np.int16).max else pa.int32()


def shard_schema(input_size: int, num_classes: int, metadata: dict | None = None, top_k: int | None = None) -> pa.Schema:
    fields = [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("shard_seed", pa.int64(), nullable=False),
        pa.field("kind", pa.int8(), nullable=False),
        pa.field("input", pa.binary(input_size), nullable=False),
    ]
    if top_k is None:
        fields.append(pa.field("logits", pa.list_(pa.float16(), num_classes), nullable=False))
    else:
        fields += [pa.field("topk_values", pa.list_(pa.float16(), top_k), nullable=False),
                   pa.field("topk_indices", pa.list_(_index_type(num_classes), top_k), nullable=False)]
    meta = {f"{META_PREFIX}{k}": json.dumps(v) for k, v in (metadata or {}).items()}
    meta[f"{META_PREFIX}schema_version"] = json.dumps(SCHEMA_VERSION)
    return pa.schema(fields, metadata=meta)


def _fixed_list(values: np.ndarray, type_: pa.DataType) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1), type_), values.shape[1])


def top_k_of(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits of each row, largest first, and their class indices."""
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable")
    indices = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(logits, indices, axis=1), indices


def make_table(
    sample_ids: np.ndarray, shard_seed: int, kinds: np.ndarray, inputs: np.ndarray, logits: np.ndarray, metadata: dict,
    top_k: int | None = None,
) -> pa.Table:
    """Build a shard table. `inputs` is uint8 [n, ...], `logits` float16 [n, K]; with `top_k`, only
    the k largest logits of each row are kept."""
    n = len(sample_ids)
    flat_inputs = np.ascontiguousarray(inputs, dtype=np.uint8).reshape(n, -1)
    logits = np.ascontiguousarray(logits, dtype=np.float16)
    num_classes = logits.shape[1]
    schema = shard_schema(flat_inputs.shape[1], num_classes, metadata, top_k)
    columns = [
        pa.array(sample_ids, pa.int64()),
        pa.array(np.full(n, shard_seed, dtype=np.int64)),
        pa.array(kinds, pa.int8()),
        pa.FixedSizeBinaryArray.from_buffers(pa.binary(flat_inputs.shape[1]), n, [None, pa.py_buffer(flat_inputs)]),
    ]
    if top_k is None:
        columns.append(_fixed_list(logits, pa.float16()))
    else:
        values, indices = top_k_of(logits, top_k)
        index_type = _index_type(num_classes)
        columns += [_fixed_list(values, pa.float16()), _fixed_list(indices.astype(index_type.to_pandas_dtype()), index_type)]
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
