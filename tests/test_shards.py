import numpy as np
import pytest
import torch

from pipeline import shards
from pipeline.errors import UserError


def write_split(split_dir, n_shards=3, rows=100, row_group_size=16, num_classes=10):
    manifest = shards.Manifest(split="train", teacher_fingerprint="t", generator_hash="g", input_shape=[1, 2, 2],
                               num_classes=num_classes, planned_shards=n_shards, row_group_size=row_group_size)
    for index in range(n_shards):
        ids = index * rows + np.arange(rows)
        inputs = (ids[:, None] % 251).astype(np.uint8).repeat(4, axis=1)
        logits = np.random.default_rng(index).normal(size=(rows, num_classes)).astype(np.float16)
        table = shards.make_table(ids, 7, np.zeros(rows, np.int8), inputs, logits, {"split": "train"})
        manifest.shards[index] = shards.write_shard(table, str(split_dir), "train", index, 7, row_group_size)
    shards.save_manifest(str(split_dir), manifest)
    return manifest


def test_roundtrip_keeps_values_schema_and_metadata(tmp_path):
    manifest = write_split(tmp_path)
    loaded = shards.load_manifest(str(tmp_path))
    assert loaded == manifest and loaded.rows == 300 and loaded.complete
    batches = list(shards.iter_batches(str(tmp_path), loaded, 64, ("sample_id", "input", "logits")))
    ids = torch.cat([b["sample_id"] for b in batches])
    assert ids.tolist() == list(range(300))
    assert torch.cat([b["input"] for b in batches])[5].tolist() == [5, 5, 5, 5]
    assert batches[0]["logits"].dtype == torch.float16
    schema = shards.open_shard(str(tmp_path), loaded.shards[0]).schema_arrow
    assert shards.read_metadata(schema)["schema_version"] == shards.SCHEMA_VERSION


def test_logits_read_back_exactly_and_a_lone_shard_is_readable_with_pyarrow_and_numpy(tmp_path):
    import pyarrow.parquet as pq

    manifest = write_split(tmp_path, n_shards=1, rows=50, num_classes=7)
    expected = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float16)  # as write_split made them
    batches = list(shards.iter_batches(str(tmp_path), manifest, 16))
    assert np.array_equal(torch.cat([b["logits"] for b in batches]).numpy(), expected)
    # Without this project: the field metadata names the element type of the fixed-size binary column.
    table = pq.read_table(tmp_path / manifest.shards[0].path)
    field = table.schema.field("logits")
    dtype = np.dtype(field.metadata[b"distillery.dtype"].decode())
    raw = b"".join(v.as_py() for v in table.column("logits"))
    assert np.array_equal(np.frombuffer(raw, dtype).reshape(50, 7), expected)


def test_serialization_is_deterministic(tmp_path):
    a = write_split(tmp_path / "a")
    b = write_split(tmp_path / "b")
    assert [r.sha256 for r in a.records()] == [r.sha256 for r in b.records()]


def test_no_temporary_files_are_left_behind(tmp_path):
    write_split(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"] + [f"train-0000{i}.parquet" for i in range(3)]


def test_truncated_or_altered_shards_are_detected(tmp_path):
    manifest = write_split(tmp_path)
    path = tmp_path / manifest.shards[1].path
    assert shards.check_shard(str(tmp_path), manifest.shards[1]) is None
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    assert "truncated" in shards.check_shard(str(tmp_path), manifest.shards[1])
    with pytest.raises(UserError, match="train-00001.parquet"):
        list(shards.iter_batches(str(tmp_path), manifest, 64))
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert "sha256" in shards.check_shard(str(tmp_path), manifest.shards[1])


def test_incomplete_split_is_refused(tmp_path):
    manifest = write_split(tmp_path)
    manifest.planned_shards = 5
    shards.save_manifest(str(tmp_path), manifest)
    with pytest.raises(UserError, match="3 of 5 shards"):
        shards.require_manifest(str(tmp_path))


def test_a_shard_set_of_another_schema_version_is_refused(tmp_path):
    manifest = write_split(tmp_path, n_shards=1)
    manifest.schema_version = shards.SCHEMA_VERSION - 1
    shards.save_manifest(str(tmp_path), manifest)
    with pytest.raises(UserError, match=f"manifest.json has shard schema version {shards.SCHEMA_VERSION - 1}.*label"):
        shards.require_manifest(str(tmp_path))


def rows_seen(split_dir, manifest, batch_size, world, workers, epoch=0):
    """sample_ids per (rank, worker), reading exactly as DDP ranks with DataLoader workers would."""
    seen = {}
    for rank in range(world):
        stream = shards.ShardStream(str(split_dir), manifest, batch_size, seed=3, rank=rank, world_size=world,
                                    columns=("sample_id",))
        stream.set_epoch(epoch)
        for worker in range(workers):
            # Iterate as that worker would: patch the worker split into a plain iteration.
            stream_iter = _iter_as_worker(stream, worker, workers)
            batches = list(stream_iter)
            assert all(len(b["sample_id"]) == batch_size for b in batches)
            seen[(rank, worker)] = torch.cat([b["sample_id"] for b in batches]).tolist() if batches else []
    return seen


def _iter_as_worker(stream, worker, workers):
    import pipeline.shards.reader as reader

    class Info:
        id, num_workers = worker, workers

    original = reader.get_worker_info
    reader.get_worker_info = lambda: Info
    try:
        yield from iter(stream)
    finally:
        reader.get_worker_info = original


@pytest.mark.parametrize("world, workers", [(1, 1), (2, 1), (2, 3), (3, 2)])
def test_ranks_and_workers_read_disjoint_rows_in_equal_batches(tmp_path, world, workers):
    manifest = write_split(tmp_path, n_shards=3, rows=100, row_group_size=16)
    batch_size = 8
    seen = rows_seen(tmp_path, manifest, batch_size, world, workers)
    all_rows = [r for rows in seen.values() for r in rows]
    assert len(all_rows) == len(set(all_rows)), "a row was read twice in one epoch"
    per_rank = [sum(len(seen[(r, w)]) for w in range(workers)) for r in range(world)]
    assert len(set(per_rank)) == 1, f"ranks got different amounts of data: {per_rank}"
    stream = shards.ShardStream(str(tmp_path), manifest, batch_size, rank=0, world_size=world)
    assert per_rank[0] == len(stream) * batch_size
    # Only what equal batching needs is left out.
    assert 300 - len(all_rows) < world * batch_size


def test_order_changes_every_epoch_but_is_reproducible(tmp_path):
    manifest = write_split(tmp_path)
    first = rows_seen(tmp_path, manifest, 10, 1, 1, epoch=0)[(0, 0)]
    again = rows_seen(tmp_path, manifest, 10, 1, 1, epoch=0)[(0, 0)]
    second = rows_seen(tmp_path, manifest, 10, 1, 1, epoch=1)[(0, 0)]
    assert first == again
    assert first != second and sorted(first) != first


def test_too_little_data_for_one_batch_per_rank_is_a_user_error(tmp_path):
    manifest = write_split(tmp_path, n_shards=1, rows=10)
    with pytest.raises(UserError, match="fewer than one batch"):
        shards.ShardStream(str(tmp_path), manifest, batch_size=8, world_size=2)
