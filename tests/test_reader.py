"""The training reader's position survives a restart, and its memory does not grow with the data."""

import tracemalloc

import pytest

from pipeline import shards
from pipeline.errors import UserError
from pipeline.train.data import ResumableLoader
from tests.test_shards import write_split


def stream(split_dir, manifest, rank=0, world=1, epoch=1):
    s = shards.ShardStream(str(split_dir), manifest, batch_size=8, seed=5, rank=rank, world_size=world,
                           columns=("sample_id",))
    s.set_epoch(epoch)
    return s


def loader(s, workers, steps_per_call=1):
    return ResumableLoader(s, workers, False, steps_per_call)


def ids(lists):
    """The sample ids of every batch, the loader's lists of batches laid end to end."""
    return [b["sample_id"].tolist() for batches in lists for b in batches]


@pytest.mark.parametrize("workers_before, workers_after", [(0, 0), (2, 2), (2, 0), (0, 2)])
def test_a_resumed_epoch_continues_with_the_next_batch(tmp_path, workers_before, workers_after):
    """Stop after 7 batches, save the loader's state, restore it into a new loader (as Lightning does
    on --resume): the batches that follow are exactly the rest of the uninterrupted epoch."""
    manifest = write_split(tmp_path, n_shards=3, rows=100, row_group_size=16)
    full = ids(loader(stream(tmp_path, manifest, rank=1, world=2), workers_before))
    first = loader(stream(tmp_path, manifest, rank=1, world=2), workers_before)
    it = iter(first)
    head = ids(next(it) for _ in range(7))  # lists of one batch
    state = first.state_dict()
    it.close()
    assert state["batches"] == 7 and state["epoch"] == 1

    again = loader(stream(tmp_path, manifest, rank=1, world=2), workers_after)
    again.load_state_dict(state)
    rest = ids(again)
    assert head + rest == full
    assert again.state_dict()["batches"] == len(full)


def test_a_finished_epochs_state_does_not_skip_into_the_next_epoch(tmp_path):
    manifest = write_split(tmp_path, n_shards=2, rows=64, row_group_size=16)
    done = loader(stream(tmp_path, manifest, epoch=0), 0)
    list(done)
    following = loader(stream(tmp_path, manifest, epoch=1), 0)
    following.load_state_dict(done.state_dict())
    assert ids(following) == ids(loader(stream(tmp_path, manifest, epoch=1), 0))


def test_midway_state_refuses_another_number_of_ranks(tmp_path):
    manifest = write_split(tmp_path, n_shards=2, rows=64, row_group_size=16)
    first = loader(stream(tmp_path, manifest, world=1), 0)
    it = iter(first)
    next(it)
    with pytest.raises(UserError, match="same number"):
        loader(stream(tmp_path, manifest, world=2), 0).load_state_dict(first.state_dict())


def test_batches_are_views_of_one_shuffled_row_group(tmp_path):
    """No per-batch copy: consecutive batches inside one row group are adjacent slices of one buffer."""
    manifest = write_split(tmp_path, n_shards=1, rows=64, row_group_size=32)
    first, second = (b["sample_id"] for b in list(stream(tmp_path, manifest, epoch=0))[:2])
    assert second.data_ptr() == first.data_ptr() + first.nbytes


def peak_bytes_of_one_epoch(split_dir, manifest) -> int:
    s = shards.ShardStream(str(split_dir), manifest, batch_size=16, seed=1)
    tracemalloc.start()
    try:
        for batch in s:
            del batch
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_shard_set_grows(tmp_path):
    """Reading 4x the shards takes about the same peak memory: nothing per row is held for the epoch
    (row permutations are drawn per row group, when it is read) and open files are capped."""
    small = write_split(tmp_path / "small", n_shards=40, rows=512, row_group_size=64)
    large = write_split(tmp_path / "large", n_shards=160, rows=512, row_group_size=64)
    peak_small = peak_bytes_of_one_epoch(tmp_path / "small", small)
    peak_large = peak_bytes_of_one_epoch(tmp_path / "large", large)
    # 61,440 more rows: a plan kept per row (8 bytes a row) would add 480 KiB.
    assert peak_large < peak_small + 128 * 1024, (peak_small, peak_large)


def test_lists_of_batches_hold_the_epoch_in_order_and_resume_at_a_list_boundary(tmp_path):
    """Several steps per call: the lists laid end to end are the epoch's batches, and a run cut after
    two lists continues with the third."""
    manifest = write_split(tmp_path, n_shards=3, rows=100, row_group_size=16)
    full = ids(loader(stream(tmp_path, manifest), 0))
    grouped = list(loader(stream(tmp_path, manifest), 0, steps_per_call=3))
    assert [len(batches) for batches in grouped] == [3] * (len(full) // 3) + ([len(full) % 3] if len(full) % 3 else [])
    assert ids(grouped) == full and len(loader(stream(tmp_path, manifest), 0, 3)) == len(grouped)

    first = loader(stream(tmp_path, manifest), 0, 3)
    it = iter(first)
    head = ids([next(it), next(it)])
    state = first.state_dict()
    it.close()
    again = loader(stream(tmp_path, manifest), 0, 3)
    again.load_state_dict(state)
    assert head + ids(again) == full
    other = loader(stream(tmp_path, manifest), 0, 4)
    with pytest.raises(UserError, match="checkpoint_every_steps"):
        other.load_state_dict(state)


@pytest.mark.parametrize("rank, world", [(0, 1), (1, 2)])
def test_the_split_in_memory_gives_the_streamed_batches(tmp_path, rank, world):
    """A split read once into tensors yields exactly the streaming reader's batches, in its order,
    also when resumed midway with another number of loader workers."""
    manifest = write_split(tmp_path, n_shards=3, rows=100, row_group_size=16)
    streamed = stream(tmp_path, manifest, rank, world, epoch=2)
    memory = shards.MemoryStream(str(tmp_path), manifest, batch_size=8, seed=5, rank=rank, world_size=world,
                                 columns=("sample_id",))
    memory.set_epoch(2)
    assert [b["sample_id"].tolist() for b in memory] == [b["sample_id"].tolist() for b in streamed]
    streamed.resume(3, order_workers=2)
    memory.resume(3, order_workers=2)
    assert [b["sample_id"].tolist() for b in memory] == [b["sample_id"].tolist() for b in streamed]


def test_a_split_that_fits_is_read_once_and_a_larger_one_streams(tmp_path, monkeypatch):
    from pipeline.run.rundir import RunPaths
    from pipeline.train.data import ShardDataModule

    paths = RunPaths(str(tmp_path))
    manifest = write_split(paths.split("train"), n_shards=3, rows=100, row_group_size=16)
    opened = []
    real_open = shards.reader.open_shard
    monkeypatch.setattr(shards.reader, "open_shard", lambda d, r: opened.append(r.path) or real_open(d, r))

    class Trainer:  # what the data module asks of Lightning's
        global_rank, world_size, num_devices, current_epoch = 0, 1, 1, 0
        strategy = type("S", (), {"root_device": __import__("torch").device("cpu")})()

    needed = shards.split_bytes(manifest, shards.reader.default_columns(manifest))
    for budget_mb, in_memory in ((1, True), (0, False)):
        assert (needed <= budget_mb << 20) == in_memory
        data = ShardDataModule(paths, batch_size=8, seed=5, loader_workers=0, memory_budget_mb=budget_mb)
        data.trainer = Trainer()
        data.setup("fit")
        opened.clear()
        for epoch in range(3):
            data.trainer.current_epoch = epoch
            assert sum(len(batches) for batches in data.train_dataloader()) == 300 // 8
        assert data.in_memory == in_memory
        # In memory: every shard was read in setup, none again; streaming: every shard every epoch.
        assert len(opened) == (0 if in_memory else 3 * 3 * 1), opened
