"""Top-k soft labels: only the k largest logits are stored, and training still learns from them."""

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.run import rundir
from pipeline import shards
from pipeline.label.stage import run_label_stage
from pipeline.run.rundir import RunPaths
from pipeline.shards.schema import TOPK_FILL_GAP, dense_logits, top_k_of
from students import kl_loss
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("ray_local")


def test_top_k_keeps_the_largest_logits_in_order():
    logits = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float16)
    values, indices = top_k_of(logits, 4)
    assert np.array_equal(values, -np.sort(-logits, axis=1)[:, :4])
    assert np.array_equal(np.take_along_axis(logits, indices, axis=1), values)
    dense = dense_logits(values, indices, 20)
    assert np.array_equal(dense.argmax(1), logits.argmax(1))
    kept = np.zeros_like(dense, dtype=bool)
    np.put_along_axis(kept, indices.astype(np.int64), True, axis=1)
    assert np.allclose(dense[~kept].reshape(50, -1), (values[:, -1:].astype(np.float32) - TOPK_FILL_GAP))


def test_kl_on_restored_logits_is_kl_on_the_renormalised_top_k():
    logits = torch.randn(8, 20) * 3
    values, indices = top_k_of(logits.numpy(), 5)
    restored = torch.from_numpy(dense_logits(values, indices, 20))
    student = torch.randn(8, 20)
    p = torch.softmax(torch.from_numpy(values), 1)  # the teacher renormalised over its top 5
    log_q = torch.log_softmax(student, 1).gather(1, torch.from_numpy(indices))
    expected = (p * (p.log() - log_q)).sum(1).mean()
    assert kl_loss(student, restored, 1.0).item() == pytest.approx(expected.item(), rel=1e-4)


def test_labeling_with_top_k_stores_fewer_bytes_and_reads_back_as_logits(tmp_path, labeled_run):
    cfg = tiny_config(tmp_path / "run", label={"top_k": 3})
    shutil.copytree(f"{labeled_run.out}/teacher", f"{cfg.out}/teacher")
    rundir.record(cfg)
    result = run_label_stage(cfg)
    split_dir = result.splits["train"].split_dir
    manifest = shards.require_manifest(split_dir)
    assert manifest.top_k == 3
    schema = pq.read_schema(f"{split_dir}/{manifest.records()[0].path}")
    assert "logits" not in schema.names and {"topk_values", "topk_indices"} <= set(schema.names)
    full = shards.require_manifest(RunPaths(labeled_run.out).split("train"))
    assert sum(r.bytes for r in manifest.records()) < sum(r.bytes for r in full.records())
    # Readers hand out dense logits whose top 3 are the full run's top 3 (same teacher, same inputs).
    topk = next(shards.iter_batches(split_dir, manifest, 10**6))["logits"]
    dense = next(shards.iter_batches(RunPaths(labeled_run.out).split("train"), full, 10**6))["logits"].float()
    assert torch.equal(topk.topk(3, 1).indices, dense.topk(3, 1).indices)
    stream = shards.ShardStream(split_dir, manifest, batch_size=64)
    batch = next(iter(stream))
    assert batch["logits"].shape == (64, 10)
