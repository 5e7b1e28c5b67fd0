"""Labeling under faults, each injected deterministically (pipeline/label/faults.py), mostly through the CLI."""

import dataclasses
import os
import shutil

import pytest
import torch

from pipeline import shards
from pipeline.__main__ import main
from pipeline.inputs.images import generate_inputs, shard_seed
from pipeline.inputs.seeds import load_seed_dataset
from pipeline.label.pool import LabelerPool
from pipeline.label.stage import run_label_stage
from pipeline.run import rundir
from pipeline.run.lock import output_lock
from pipeline.run.rundir import RunPaths
from pipeline.teach.stage import run_teacher_stage
from teachers import TEACHERS, weights_to_bytes
from tests.conftest import cli, tiny_config

pytestmark = pytest.mark.usefixtures("ray_local")


def fresh_run(tmp_path, name, teacher_from=None, **sections):
    """A run dir holding a teacher (copied from `teacher_from` when given) but no shards."""
    cfg = tiny_config(tmp_path / name, **sections)
    if teacher_from is None:
        run_teacher_stage(cfg)
    else:
        shutil.copytree(os.path.join(teacher_from, "teacher"), os.path.join(cfg.out, "teacher"))
        rundir.record(cfg)
    return cfg


def shard_files(split_dir):
    return sorted(os.listdir(split_dir))


def test_a_worker_dying_midway_through_a_shard_is_retried_cleanly(tmp_path, labeled_run):
    cfg = fresh_run(tmp_path, "run", teacher_from=labeled_run.out)
    once = tmp_path / "once"
    once.mkdir()
    proc = cli("label", "--out", cfg.out, env={"DISTILLERY_CRASH_SHARD": "train:1", "DISTILLERY_CRASH_ONCE_DIR": str(once)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (once / "crashed-train-1").exists(), "the fault was not injected"
    split_dir = RunPaths(cfg.out).split("train")
    manifest = shards.require_manifest(split_dir)
    # No partial file is visible, no shard is duplicated, the manifest's rows are the rows on disk.
    assert shard_files(split_dir) == ["manifest.json"] + [f"train-0000{i}.parquet" for i in range(cfg.data.shards)]
    on_disk = sum(shards.open_shard(split_dir, r).metadata.num_rows for r in manifest.records())
    assert manifest.rows == on_disk == cfg.data.shards * cfg.data.samples_per_shard
    # And the retried shard is the very shard an undisturbed run writes.
    reference = shards.require_manifest(RunPaths(labeled_run.out).split("train"))
    assert [r.sha256 for r in manifest.records()] == [r.sha256 for r in reference.records()]


def test_a_killed_driver_leaves_state_that_a_rerun_finishes_byte_identically(tmp_path):
    more = {"shards": 8, "samples_per_shard": 128}
    reference = fresh_run(tmp_path, "reference", data=more)
    run_label_stage(reference)
    cfg = fresh_run(tmp_path, "killed", teacher_from=reference.out, data=more)
    # The variable is the driver's alone: it joins the shared Ray, which ends the workers and actors of
    # a job whose driver died (its Ray processes are not the driver's, so they outlive it).
    proc = cli("label", "--out", cfg.out, env={"DISTILLERY_KILL_DRIVER_AFTER": "3"}, own_ray=False)
    assert proc.returncode != 0
    split_dir = RunPaths(cfg.out).split("train")
    partial = shards.load_manifest(split_dir)
    assert partial is None or not partial.complete, "the driver was not killed mid-run"
    assert cli("label", "--out", cfg.out).returncode == 0
    finished = shards.require_manifest(split_dir)
    expected = shards.require_manifest(RunPaths(reference.out).split("train"))
    assert [r.sha256 for r in finished.records()] == [r.sha256 for r in expected.records()]
    assert shard_files(split_dir) == ["manifest.json"] + [f"train-{i:05d}.parquet" for i in range(8)]


def test_a_second_run_on_the_same_output_stops_at_once(tmp_path, labeled_run):
    cfg = fresh_run(tmp_path, "run", teacher_from=labeled_run.out)
    with output_lock(cfg.out):  # the first run, still going
        proc = cli("label", "--out", cfg.out)
    assert proc.returncode == 1
    assert "is in use by another run" in proc.stderr and "Traceback" not in proc.stderr
    assert shards.load_manifest(RunPaths(cfg.out).split("train")) is None


def test_verify_lists_every_bad_or_missing_shard(tmp_path, labeled_run, capsys):
    """In this process: what is checked is the command's output and exit code, not the process."""
    out = tmp_path / "run"
    shutil.copytree(labeled_run.out, out)
    assert main(["verify", str(out)]) == 0 and "all match" in capsys.readouterr().out
    train = out / "shards" / "train"
    (train / "train-00000.parquet").write_bytes((train / "train-00000.parquet").read_bytes()[:-7])
    (train / "train-00002.parquet").unlink()
    assert main(["verify", str(out)]) == 1
    bad = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BAD")]
    assert len(bad) == 2
    assert any("train-00000.parquet" in line and "truncated" in line for line in bad)
    assert any("train-00002.parquet is missing" in line for line in bad)
    # Training refuses to read a bad shard, with a sentence naming it.
    assert main(["train", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: Shard") and ("train-00000.parquet" in last or "train-00002.parquet" in last)


def test_non_finite_teacher_outputs_are_rejected_and_counted(tmp_path):
    """A teacher whose logit 0 overflows float16 on about half of the inputs."""
    cfg = tiny_config(tmp_path / "run")
    teacher = TEACHERS.build("cnn", input_shape=(1, 8, 8), num_outputs=10, width=cfg.teacher.width).eval()
    head = teacher[-1]
    seed = load_seed_dataset("digits").train_images
    inputs, _ = generate_inputs(seed, cfg.data, shard_seed(cfg.data.seed, "train", 0), 256)
    with torch.no_grad():
        features = teacher[:-1](torch.from_numpy(inputs).float() / 255)
        head.weight[0] = 1000.0
        score = features.sum(1) * 1000.0
        head.bias[0] = 65504.0 + 1.0 - float(score.median())
    checkpoint = tmp_path / "overflowing.safetensors"
    checkpoint.write_bytes(weights_to_bytes(teacher))
    cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, checkpoint=str(checkpoint)))
    run_teacher_stage(cfg)
    result = run_label_stage(cfg)
    train = result.splits["train"]
    planned = cfg.data.shards * cfg.data.samples_per_shard
    assert 0 < train.rejected < planned
    assert train.rows + train.rejected == planned
    manifest = shards.require_manifest(train.split_dir)
    logits = torch.cat([b["logits"] for b in shards.iter_batches(train.split_dir, manifest, 4096)])
    assert len(logits) == train.rows and torch.isfinite(logits.float()).all()


def test_an_actor_lost_with_two_shards_in_flight_is_replaced_once():
    """Both of its shards fail; the second failure must not replace the replacement (which may
    already hold a redone shard, and would be left running)."""
    pool = LabelerPool.__new__(LabelerPool)  # the replacement logic alone, without Ray
    started = []
    pool._start = lambda: started.append(object()) or started[-1]
    dead = object()
    pool.actors = [dead]
    pool.replace(0, dead)
    pool.replace(0, dead)
    assert len(started) == 1 and pool.actors == started
