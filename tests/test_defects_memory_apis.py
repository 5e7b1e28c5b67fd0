"""The in-memory-or-streaming decision counts what training holds, and the code reaches Lightning and
torchmetrics only through their public API."""

import multiprocessing
import os
import pathlib
import re

import lightning as L
import numpy as np
import pytest
import torch

from pipeline import shards
from pipeline.run.rundir import RunPaths
from pipeline.train import data as train_data
from pipeline.train.checkpoints import LAST, AtomicCheckpointIO, LastCheckpoint, read_checkpoint
from pipeline.train.data import ResumableLoader, ShardDataModule, memory_budget
from tests.test_shards import write_split

MIB = 1 << 20
ROOT = pathlib.Path(__file__).resolve().parents[1]


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def write_top_k_split(split_dir, rows=40, num_classes=1000, top_k=5):
    manifest = shards.Manifest(split="train", teacher_fingerprint="t", generator_hash="g", input_shape=[1, 2, 2],
                               num_classes=num_classes, planned_shards=1, row_group_size=16, top_k=top_k)
    ids = np.arange(rows)
    inputs = (ids[:, None] % 251).astype(np.uint8).repeat(4, axis=1)
    logits = np.random.default_rng(0).normal(size=(rows, num_classes)).astype(np.float16)
    table = shards.make_table(ids, 7, np.zeros(rows, np.int8), inputs, logits, {"split": "train"}, top_k=top_k)
    manifest.shards[0] = shards.write_shard(table, str(split_dir), "train", 0, 7, 16)
    shards.save_manifest(str(split_dir), manifest)
    return manifest


# Defect A: the memory budget.

def test_a_top_k_splits_bytes_are_what_read_split_holds_dense_float32_logits(tmp_path):
    manifest = write_top_k_split(tmp_path, rows=40, num_classes=1000)
    columns = shards.reader.default_columns(manifest)
    held = shards.read_split(str(tmp_path), manifest, columns)
    assert held["logits"].dtype == torch.float32 and held["logits"].shape == (40, 1000)
    assert shards.split_bytes(manifest, ("logits",)) == 40 * 1000 * 4
    assert shards.split_bytes(manifest, columns) == sum(t.nbytes for t in held.values())
    # A dense split keeps its float16 logits.
    dense = write_split(tmp_path / "dense", n_shards=1, rows=40, num_classes=1000)
    held = shards.read_split(str(tmp_path / "dense"), dense, columns)
    assert shards.split_bytes(dense, columns) == sum(t.nbytes for t in held.values())


def fake_cgroup(root, v2=None, v1=None):
    if v2 is not None:
        (root / "memory.max").write_text(f"{v2}\n")
    if v1 is not None:
        (root / "memory").mkdir()
        (root / "memory" / "memory.limit_in_bytes").write_text(f"{v1}\n")
    return str(root)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_the_default_budget_is_a_quarter_of_the_containers_limit(tmp_path, monkeypatch, version):
    limit = 64 * MIB  # below any test machine's physical memory
    root = fake_cgroup(tmp_path, **{version: limit})
    assert memory_budget(None, cgroup_root=root) == limit // 4
    monkeypatch.setattr(train_data, "CGROUP_ROOT", root)  # the default path is the one read
    assert memory_budget(None) == limit // 4


@pytest.mark.parametrize("limits", [{"v2": "max"}, {"v1": 9223372036854771712}, {}])
def test_no_container_limit_leaves_the_machines_memory(tmp_path, limits):
    assert memory_budget(None, cgroup_root=fake_cgroup(tmp_path, **limits)) == physical_memory() // 4


def test_the_budget_is_shared_by_the_training_processes_on_a_machine(tmp_path):
    assert memory_budget(800, processes=4) == 200 * MIB
    root = fake_cgroup(tmp_path, v2=64 * MIB)
    assert memory_budget(None, processes=4, cgroup_root=root) == 64 * MIB // 4 // 4


class StubTrainer:  # what the data module asks of Lightning's (one device per Ray Train worker)
    global_rank, world_size, num_devices, current_epoch = 0, 1, 1, 0
    strategy = type("S", (), {"root_device": torch.device("cpu")})()


def test_each_ray_train_worker_on_a_node_takes_its_share_not_the_whole(tmp_path):
    paths = RunPaths(str(tmp_path))
    manifest = write_split(paths.split("train"), n_shards=3, rows=100, num_classes=1000)
    needed = shards.split_bytes(manifest, shards.reader.default_columns(manifest))
    assert needed <= MIB < 4 * needed  # fits the node's 1 MiB, not a quarter of it
    decided = {}
    for workers_here in (1, 4):
        data = ShardDataModule(paths, batch_size=8, seed=5, loader_workers=0, memory_budget_mb=1,
                               processes_here=workers_here)
        data.trainer = StubTrainer()
        data.setup("fit")
        decided[workers_here] = data.in_memory
    assert decided == {1: True, 4: False}


# Defect B: public API only.

PRIVATE_NAMES = re.compile(
    r"\b(_last_global_step_saved|_save_last_checkpoint|_should_skip_saving_checkpoint|_monitor_candidates"
    r"|_shutdown_workers)\b"  # Lightning's ModelCheckpoint, torch's DataLoader iterator
    r"|\.(confidences|accuracies)\b")  # torchmetrics' calibration states as attributes


def test_the_package_uses_no_private_lightning_or_torchmetrics_names():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for package in ("pipeline", "students", "teachers") for path in sorted((ROOT / package).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE_NAMES.search(line)]
    assert not found, "private API in use:\n" + "\n".join(found)


class SavesSeen(AtomicCheckpointIO):
    def __init__(self):
        self.steps = []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.steps.append(checkpoint["global_step"])
        super().save_checkpoint(checkpoint, path, storage_options)


class TwoStepsACall(L.LightningModule):
    """Two optimizer steps per training_step call, as the student's module takes several."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        for _ in range(2):
            optimizer.zero_grad()
            self.manual_backward(self.layer(batch).pow(2).mean())
            optimizer.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=1)  # 4 calls, 8 steps an epoch


def fit(tmp_path, every_steps, max_epochs, ckpt_path=None):
    io_plugin = SavesSeen()
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, plugins=[io_plugin],
                        callbacks=[LastCheckpoint(str(tmp_path / "checkpoints"), every_steps)],
                        default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TwoStepsACall(), ckpt_path=ckpt_path)
    return io_plugin.steps


def test_checkpoints_when_the_step_count_crosses_a_multiple_and_lightning_adds_none(tmp_path):
    # Steps 2, 4, 6, 8: past 3 at 4, past 6 at 6, and the finished state at 8.
    assert fit(tmp_path, every_steps=3, max_epochs=1) == [4, 6, 8]
    assert [p.name for p in tmp_path.rglob("*.ckpt")] == [LAST]
    assert read_checkpoint(str(tmp_path / "checkpoints" / LAST))["global_step"] == 8


def test_every_steps_zero_checkpoints_each_epoch_and_resumes_from_there(tmp_path):
    assert fit(tmp_path, every_steps=0, max_epochs=2) == [8, 16]
    last = str(tmp_path / "checkpoints" / LAST)
    assert fit(tmp_path, every_steps=0, max_epochs=3, ckpt_path=last) == [24]  # only the third epoch trained
    assert read_checkpoint(last)["global_step"] == 24


def test_an_epoch_left_early_stops_its_loader_workers(tmp_path):
    manifest = write_split(tmp_path, n_shards=2, rows=64, row_group_size=16)
    stream = shards.ShardStream(str(tmp_path), manifest, batch_size=8, seed=5, columns=("sample_id",))
    before = set(multiprocessing.active_children())
    batches = iter(ResumableLoader(stream, num_workers=1, pin_memory=False, steps_per_call=1))
    next(batches)
    assert set(multiprocessing.active_children()) - before  # the loader's worker runs
    batches.close()  # what happens to the generator when Lightning leaves the epoch early
    assert not set(multiprocessing.active_children()) - before
