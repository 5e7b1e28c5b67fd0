"""Writing one shard: serialize in memory, hash, write under a temporary name, rename into place."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.run import storage
from pipeline.shards.manifest import ShardRecord, sha256_of


def shard_file_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.parquet"


def serialize(table: pa.Table, row_group_size: int) -> bytes:
    """Parquet bytes for `table`. Deterministic: same table → same bytes (no timestamps are written)."""
    sink = pa.BufferOutputStream()
    # Inputs and fp16 logits compress little; zstd at a low level still trims the constant and
    # low-entropy columns at almost no CPU cost.
    pq.write_table(table, sink, row_group_size=row_group_size, compression="zstd", compression_level=1,
                   use_dictionary=["kind"], write_statistics=["sample_id"])
    return sink.getvalue().to_pybytes()


def write_shard(table: pa.Table, split_dir: str, split: str, index: int, seed: int,
                row_group_size: int, rejected: int = 0) -> ShardRecord:
    data = serialize(table, row_group_size)
    name = shard_file_name(split, index)
    storage.write_bytes_atomic(storage.join(split_dir, name), data)
    return ShardRecord(index=index, path=name, rows=table.num_rows, sha256=sha256_of(data), bytes=len(data),
                       seed=seed, rejected=rejected)
