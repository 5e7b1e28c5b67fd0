"""Shards: the schema, the writer, the manifest and the readers (the contract every stage relies on)."""

from pipeline.shards.manifest import (
    Manifest, ShardRecord, check_seed_file, check_shard, check_split, damage_error, damaged_shards, load_manifest, require_manifest,
    require_intact, save_manifest,
)
from pipeline.shards.reader import MemoryStream, ShardStream, iter_batches, open_shard, read_split, split_bytes
from pipeline.shards.schema import KINDS, SCHEMA_VERSION, make_table, read_metadata, shard_schema
from pipeline.shards.writer import serialize, shard_file_name, write_shard

__all__ = [
    "KINDS", "SCHEMA_VERSION", "Manifest", "MemoryStream", "ShardRecord", "ShardStream", "check_seed_file",
    "check_shard", "check_split",
    "damage_error", "damaged_shards", "iter_batches",
    "load_manifest", "make_table", "open_shard", "read_metadata", "require_manifest", "save_manifest",
    "read_split", "require_intact", "serialize", "shard_file_name", "shard_schema", "split_bytes", "write_shard",
]
