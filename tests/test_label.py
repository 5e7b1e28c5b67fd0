import dataclasses
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from pipeline import shards
from pipeline.errors import UserError
from pipeline.label.stage import run_label_stage
from pipeline.run.rundir import RunPaths
from pipeline.inputs.images import to_float
from pipeline.teach.load import load_teacher

pytestmark = pytest.mark.usefixtures("ray_local")  # one Ray for the module; stages reuse it


def copy_run(cfg, tmp_path):
    shutil.copytree(cfg.out, tmp_path / "run")
    return dataclasses.replace(cfg, out=str(tmp_path / "run"))


def test_every_planned_shard_is_committed(labeled_run):
    paths = RunPaths(labeled_run.out)
    train = shards.require_manifest(paths.split("train"))
    heldout = shards.require_manifest(paths.split("heldout"))
    assert train.rows == labeled_run.data.shards * labeled_run.data.samples_per_shard
    assert heldout.rows == labeled_run.data.heldout_shards * labeled_run.data.samples_per_shard
    _, card = load_teacher(paths)
    assert train.teacher_fingerprint == card.fingerprint
    for record in train.records():
        assert shards.check_shard(paths.split("train"), record) is None
        assert pq.ParquetFile(f"{paths.split('train')}/{record.path}").metadata.num_rows == record.rows


def test_stored_logits_are_the_teachers_logits_on_the_stored_inputs(labeled_run):
    paths = RunPaths(labeled_run.out)
    teacher, card = load_teacher(paths)
    manifest = shards.require_manifest(paths.split("heldout"))
    batch = next(shards.iter_batches(paths.split("heldout"), manifest, 256))
    with torch.no_grad():
        expected = torch.from_numpy(teacher(to_float(batch["input"].view(-1, *card.input_shape)).numpy()))
    torch.testing.assert_close(batch["logits"].float(), expected, atol=2e-2, rtol=2e-3)


def test_sample_ids_are_unique_and_train_and_heldout_inputs_differ(labeled_run):
    paths = RunPaths(labeled_run.out)
    cols = ("sample_id", "input")
    train = list(shards.iter_batches(paths.split("train"), shards.require_manifest(paths.split("train")), 10**6, cols))
    held = list(shards.iter_batches(paths.split("heldout"), shards.require_manifest(paths.split("heldout")), 10**6, cols))
    ids = torch.cat([b["sample_id"] for b in train])
    assert len(ids.unique()) == len(ids)
    train_inputs = {bytes(r.numpy()) for b in train for r in b["input"]}
    assert not any(bytes(r.numpy()) in train_inputs for b in held for r in b["input"])


def test_rerun_skips_committed_shards_and_rewrites_missing_ones_identically(labeled_run, tmp_path):
    cfg = copy_run(labeled_run, tmp_path)
    paths = RunPaths(cfg.out)
    split = paths.split("train")
    before = shards.load_manifest(split)
    result = run_label_stage(cfg)
    assert result.splits["train"].written == 0 and result.splits["train"].skipped == cfg.data.shards
    # Lose shard 1 (as a crash before its commit would), and corrupt shard 2 after its commit.
    manifest = shards.load_manifest(split)
    del manifest.shards[1]
    shards.save_manifest(split, manifest)
    (tmp_path / "run" / "shards" / "train" / before.shards[1].path).unlink()
    path2 = tmp_path / "run" / "shards" / "train" / before.shards[2].path
    path2.write_bytes(path2.read_bytes()[:100])
    with pytest.raises(UserError, match="label --repair"):  # damage after commit is news, not routine
        run_label_stage(cfg)
    result = run_label_stage(dataclasses.replace(cfg, label=dataclasses.replace(cfg.label, repair=True)))
    assert result.splits["train"].written == 2 and result.splits["train"].repaired == [before.shards[2].path]
    after = shards.load_manifest(split)
    assert [r.sha256 for r in after.records()] == [r.sha256 for r in before.records()]


def test_shards_from_another_teacher_are_never_mixed_in(labeled_run, tmp_path):
    cfg = copy_run(labeled_run, tmp_path)
    split = RunPaths(cfg.out).split("train")
    manifest = shards.load_manifest(split)
    manifest.teacher_fingerprint = "0" * 64
    shards.save_manifest(split, manifest)
    with pytest.raises(UserError, match="different teacher"):
        run_label_stage(cfg)


def test_label_needs_a_teacher(tmp_path):
    from tests.conftest import tiny_config
    from pipeline.run import rundir

    cfg = tiny_config(tmp_path / "empty")
    rundir.record(cfg)
    with pytest.raises(UserError, match="run the teacher stage first"):
        run_label_stage(cfg)


def test_output_may_be_a_filesystem_uri(tmp_path, labeled_run):
    """Storage goes through pyarrow's filesystems: a file:// URI works like a path (as s3:// would)."""
    from tests.conftest import tiny_config
    from pipeline.run import rundir

    cfg = tiny_config(f"file://{tmp_path}/run")
    shutil.copytree(f"{labeled_run.out}/teacher", tmp_path / "run" / "teacher")
    rundir.record(cfg)
    result = run_label_stage(cfg)
    split_dir = result.splits["train"].split_dir
    assert split_dir.startswith("file://")
    manifest = shards.require_manifest(split_dir)
    on_disk = sorted(p.name for p in (tmp_path / "run" / "shards" / "train").iterdir())
    assert on_disk == ["manifest.json"] + [r.path for r in manifest.records()]
    rows = sum(len(b["logits"]) for b in shards.iter_batches(split_dir, manifest, 100))
    assert rows == manifest.rows == cfg.data.shards * cfg.data.samples_per_shard
    # Same config, same teacher: the same bytes as the run written to a plain path.
    reference = shards.require_manifest(RunPaths(labeled_run.out).split("train"))
    assert [r.sha256 for r in manifest.records()] == [r.sha256 for r in reference.records()]


def test_shards_are_the_same_bytes_whether_inputs_are_made_in_tasks_or_in_the_actors(labeled_run, tmp_path,
                                                                                       monkeypatch):
    """On CPU the teacher's actors make their own inputs; with GPUs, CPU tasks make them beside the
    labeling (pipeline/label/generation.py). Either way a shard is the same pure function of its job."""
    from pipeline.label import stage
    from pipeline.label.pool import LabelerPool

    made_in_tasks = []

    class GpuLikePool(LabelerPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            assert self.on_cpu  # this machine has no GPU: the default is to make inputs in the actors
            self.on_cpu = False

    real_run_generation = stage.run_generation

    class CountingRunGeneration:
        @staticmethod
        def options(**kwargs):
            made_in_tasks.append(kwargs)
            return real_run_generation.options(**kwargs)

    monkeypatch.setattr(stage, "LabelerPool", GpuLikePool)
    monkeypatch.setattr(stage, "run_generation", CountingRunGeneration)
    cfg = copy_run(labeled_run, tmp_path)
    shutil.rmtree(tmp_path / "run" / "shards")
    run_label_stage(cfg)
    assert len(made_in_tasks) == cfg.data.shards + cfg.data.heldout_shards
    for split in ("train", "heldout"):
        tasks = shards.require_manifest(RunPaths(cfg.out).split(split))
        actors = shards.require_manifest(RunPaths(labeled_run.out).split(split))
        assert [r.sha256 for r in tasks.records()] == [r.sha256 for r in actors.records()]
