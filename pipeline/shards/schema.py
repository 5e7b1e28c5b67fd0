"""The shard schema: one Parquet file per shard, one row per generated input.

Columns
  sample_id   int64     unique within a split: shard_index * samples_per_shard + row
  shard_seed  int64     the seed the shard's inputs were generated from (constant per shard)
  kind        int8      how the input was made (index into KINDS)
  input       fixed_size_list<uint8>[C*H*W]   the input, compact, exactly as the teacher saw it
  logits      fixed_size_list<float16>[K]     the teacher's raw logits (temperature is a training choice)

Schema metadata (key-value) records the version, the teacher fingerprint, the generator config hash,
the input shape and the split, so a lone file still says where it came from.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1
KINDS = ("augment", "mixup", "noise")
META_PREFIX = "distillery."


def shard_schema(input_size: int, num_classes: int, metadata: dict | None = None) -> pa.Schema:
    fields = [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("shard_seed", pa.int64(), nullable=False),
        pa.field("kind", pa.int8(), nullable=False),
        pa.field("input", pa.list_(pa.uint8(), input_size), nullable=False),
        pa.field("logits", pa.list_(pa.float16(), num_classes), nullable=False),
    ]
    meta = {f"{META_PREFIX}{k}": json.dumps(v) for k, v in (metadata or {}).items()}
    meta[f"{META_PREFIX}schema_version"] = json.dumps(SCHEMA_VERSION)
    return pa.schema(fields, metadata=meta)


def make_table(
    sample_ids: np.ndarray, shard_seed: int, kinds: np.ndarray, inputs: np.ndarray, logits: np.ndarray, metadata: dict
) -> pa.Table:
    """Build a shard table. `inputs` is uint8 [n, ...], `logits` float16 [n, K]."""
    n = len(sample_ids)
    flat_inputs = np.ascontiguousarray(inputs, dtype=np.uint8).reshape(n, -1)
    logits = np.ascontiguousarray(logits, dtype=np.float16)
    schema = shard_schema(flat_inputs.shape[1], logits.shape[1], metadata)
    columns = [
        pa.array(sample_ids, pa.int64()),
        pa.array(np.full(n, shard_seed, dtype=np.int64)),
        pa.array(kinds, pa.int8()),
        pa.FixedSizeListArray.from_arrays(pa.array(flat_inputs.reshape(-1)), flat_inputs.shape[1]),
        pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1), pa.float16()), logits.shape[1]),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def fixed_list_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed_size_list column as a 2-D numpy array [rows, width] (zero-copy where possible)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


def read_metadata(schema: pa.Schema) -> dict:
    raw = schema.metadata or {}
    return {k.decode()[len(META_PREFIX):]: json.loads(v) for k, v in raw.items() if k.decode().startswith(META_PREFIX)}
