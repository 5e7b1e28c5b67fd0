import csv
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pipeline.rundir import RunPaths
from pipeline.train import run_train_stage
from students import STUDENTS, DistillationModule, kl_loss


def copy_run(cfg, tmp_path):
    shutil.copytree(cfg.out, tmp_path / "run")
    return dataclasses.replace(cfg, out=str(tmp_path / "run"))


def test_kl_loss_is_zero_only_when_the_student_matches():
    teacher = torch.randn(8, 10)
    assert kl_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_loss(torch.randn(8, 10), teacher, 2.0).item() > 0.01


def test_student_memorises_one_batch():
    """The module, loss and optimizer together can drive the loss on a fixed batch to near zero."""
    torch.manual_seed(0)
    student = STUDENTS.build("mlp", input_shape=(1, 8, 8), num_classes=10, width=64, depth=2)
    module = DistillationModule(student, (1, 8, 8), 10, temperature=2.0)
    batch = {"input": torch.randint(0, 256, (32, 64), dtype=torch.uint8), "logits": (3 * torch.randn(32, 10)).half()}
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(300):
        loss, _, _ = module._shared_step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02


def test_train_stage_saves_the_student_and_curves(labeled_run, tmp_path):
    cfg = copy_run(labeled_run, tmp_path)
    result = run_train_stage(cfg)
    paths = RunPaths(cfg.out)
    state = load_file(paths.student_weights)
    student = STUDENTS.build(cfg.student.arch, input_shape=(1, 8, 8), num_classes=10, width=cfg.student.width,
                             depth=cfg.student.depth)
    student.load_state_dict(state)
    assert result.card.epochs == cfg.train.max_epochs
    rows = cfg.data.shards * cfg.data.samples_per_shard
    assert result.card.steps == cfg.train.max_epochs * (rows // cfg.train.batch_size)
    metrics = glob.glob(os.path.join(paths.student_dir, "logs", "*", "metrics.csv"))
    assert metrics and any(row.get("train/agreement") for row in csv.DictReader(open(metrics[0])))
    assert run_train_stage(cfg).action == "reused"


def test_ddp_with_two_cpu_processes(labeled_run, tmp_path):
    """Two gloo ranks, each reading its own half of the shards: half the steps per epoch."""
    cfg = copy_run(labeled_run, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pipeline", "train", "--out", cfg.out, "--devices", "2"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.load(open(RunPaths(cfg.out).student_card))
    rows = cfg.data.shards * cfg.data.samples_per_shard
    assert card["steps"] == cfg.train.max_epochs * ((rows // 2) // cfg.train.batch_size)
    # The trained weights came back from the ranks: they are not the seeded initial weights.
    torch.manual_seed(cfg.train.seed)
    initial = STUDENTS.build(cfg.student.arch, input_shape=(1, 8, 8), num_classes=10, width=cfg.student.width,
                             depth=cfg.student.depth).state_dict()
    trained = load_file(RunPaths(cfg.out).student_weights)
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
