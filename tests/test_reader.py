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


def ids(batches):
    return [b["sample_id"].tolist() for b in batches]


@pytest.mark.parametrize("workers_before, workers_after", [(0, 0), (2, 2), (2, 0), (0, 2)])
def test_a_resumed_epoch_continues_with_the_next_batch(tmp_path, workers_before, workers_after):
    """Stop after 7 batches, save the loader's state, restore it into a new loader (as Lightning does
    on --resume): the batches that follow are exactly the rest of the uninterrupted epoch."""
    manifest = write_split(tmp_path, n_shards=3, rows=100, row_group_size=16)
    full = ids(ResumableLoader(stream(tmp_path, manifest, rank=1, world=2), workers_before, False))
    first = ResumableLoader(stream(tmp_path, manifest, rank=1, world=2), workers_before, False)
    it = iter(first)
    head = ids(next(it) for _ in range(7))
    state = first.state_dict()
    it.close()
    assert state["batches"] == 7 and state["epoch"] == 1

    again = ResumableLoader(stream(tmp_path, manifest, rank=1, world=2), workers_after, False)
    again.load_state_dict(state)
    rest = ids(again)
    assert head + rest == full
    assert again.state_dict()["batches"] == len(full)


def test_a_finished_epochs_state_does_not_skip_into_the_next_epoch(tmp_path):
    manifest = write_split(tmp_path, n_shards=2, rows=64, row_group_size=16)
    done = ResumableLoader(stream(tmp_path, manifest, epoch=0), 0, False)
    list(done)
    following = ResumableLoader(stream(tmp_path, manifest, epoch=1), 0, False)
    following.load_state_dict(done.state_dict())
    assert ids(following) == ids(ResumableLoader(stream(tmp_path, manifest, epoch=1), 0, False))


def test_midway_state_refuses_another_number_of_ranks(tmp_path):
    manifest = write_split(tmp_path, n_shards=2, rows=64, row_group_size=16)
    loader = ResumableLoader(stream(tmp_path, manifest, world=1), 0, False)
    it = iter(loader)
    next(it)
    with pytest.raises(UserError, match="same number"):
        ResumableLoader(stream(tmp_path, manifest, world=2), 0, False).load_state_dict(loader.state_dict())


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
