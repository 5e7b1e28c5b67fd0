import csv
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.inputs.images import ImageDecode
from pipeline.run.rundir import RunPaths
from pipeline.tasks.classification import LogitObjective
from tests.conftest import cli as run_cli
from pipeline.train.stage import run_train_stage
from pipeline.train.faults import TRAIN_FAULT
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
    student = STUDENTS.build("mlp", input_shape=(1, 8, 8), num_outputs=10, width=64, depth=2)
    module = DistillationModule(student, ImageDecode((1, 8, 8)), LogitObjective("kl", 2.0, 0.0))
    batch = {"input": torch.randint(0, 256, (32, 64), dtype=torch.uint8), "logits": (3 * torch.randn(32, 10)).half()}
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(300):
        loss, _ = module.loss_and_agreement(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_learning_rate_schedules(schedule):
    import lightning as L

    student = STUDENTS.build("mlp", input_shape=(1, 8, 8), num_outputs=10, width=8, depth=1)
    module = DistillationModule(student, ImageDecode((1, 8, 8)), LogitObjective("kl", 1.0, 0.0), lr=1e-2,
                                schedule=schedule, steps_per_epoch=10)
    module.trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    rates = []
    for _ in range(30):  # the whole budget: 3 epochs of 10 steps
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if isinstance(configured, dict):
            configured["lr_scheduler"]["scheduler"].step()
    peak = max(range(30), key=rates.__getitem__)
    if schedule == "constant":
        assert rates == [1e-2] * 30
    elif schedule == "cosine":
        assert peak == 0 and rates[0] == pytest.approx(1e-2) and rates[-1] < 1e-4
    else:
        assert 0 < peak < 10 and rates[peak] == pytest.approx(1e-2, rel=0.01) and rates[-1] < 1e-5


def test_train_stage_saves_the_student_and_curves(labeled_run, tmp_path):
    cfg = copy_run(labeled_run, tmp_path)
    result = run_train_stage(cfg)
    paths = RunPaths(cfg.out)
    state = load_file(paths.student_weights)
    student = STUDENTS.build(cfg.student.arch, input_shape=(1, 8, 8), num_outputs=10, width=cfg.student.width,
                             depth=cfg.student.depth)
    student.load_state_dict(state)
    assert result.card.epochs == cfg.train.max_epochs
    rows = cfg.data.shards * cfg.data.samples_per_shard
    assert result.card.steps == cfg.train.max_epochs * (rows // cfg.train.batch_size)
    metrics = glob.glob(os.path.join(paths.student_dir, "logs", "*", "metrics.csv"))
    assert metrics and any(row.get("train/agreement") for row in csv.DictReader(open(metrics[0])))
    assert run_train_stage(cfg).action == "reused"
    # The ONNX export runs without this project's code and computes what the PyTorch student does.
    x = torch.rand(7, 1, 8, 8)
    np.save(tmp_path / "x.npy", x.numpy())
    proc = subprocess.run([sys.executable, "-c", ONNX_CHECK, os.path.join(paths.student_dir, "student.onnx"),
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        expected = student.eval()(x)
    for n in (1, 7):
        got = torch.from_numpy(np.load(tmp_path / f"y{n}.npy"))
        torch.testing.assert_close(got, expected[:n], atol=1e-5, rtol=1e-4)


# Loads the ONNX file with onnxruntime alone, at two batch sizes, and proves nothing of ours was imported.
ONNX_CHECK = """
import sys, numpy as np, onnxruntime
path, tmp = sys.argv[1], sys.argv[2]
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
x = np.load(tmp + "/x.npy")
for n in (1, 7):
    (y,) = session.run(["logits"], {"input": x[:n]})
    np.save(tmp + f"/y{n}.npy", y)
assert not {"pipeline", "students", "teachers", "torch"} & set(sys.modules), sorted(sys.modules)
"""


# No preflight (it runs in the launching process, before the ranks, and test_preflight covers it): these
# runs are about the ranks.
DDP_SETTINGS = ["--devices", "2", "--train.checkpoint_every_steps", "4", "--train.preflight", "false"]


def cli(*args, fault=None, timeout=240):
    return run_cli(*args, env={TRAIN_FAULT: fault} if fault else None, timeout=timeout)


@pytest.fixture(scope="module")
def ddp_run(labeled_run, tmp_path_factory):
    cfg = copy_run(labeled_run, tmp_path_factory.mktemp("ddp"))
    proc = cli("train", "--out", cfg.out, *DDP_SETTINGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cfg


def test_ddp_with_two_cpu_processes(ddp_run):
    """Two gloo ranks, each reading its own half of the shards: half the steps per epoch."""
    cfg = ddp_run
    card = json.load(open(RunPaths(cfg.out).student_card))
    rows = cfg.data.shards * cfg.data.samples_per_shard
    assert card["steps"] == cfg.train.max_epochs * ((rows // 2) // cfg.train.batch_size)
    # The trained weights came back from the ranks: they are not the seeded initial weights.
    torch.manual_seed(cfg.train.seed)
    initial = STUDENTS.build(cfg.student.arch, input_shape=(1, 8, 8), num_outputs=10, width=cfg.student.width,
                             depth=cfg.student.depth).state_dict()
    trained = load_file(RunPaths(cfg.out).student_weights)
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_a_failing_rank_ends_the_job_and_the_run_resumes(ddp_run, labeled_run, tmp_path):
    """Rank 1 raises after step 7 (of 12; 6 an epoch): the whole job exits non-zero instead of
    rank 0 waiting forever in its next all-reduce (subprocess.run's timeout is the bound), and
    --resume then finishes with the weights of the unbroken two-rank run."""
    cfg = copy_run(labeled_run, tmp_path)
    failed = cli("train", "--out", cfg.out, *DDP_SETTINGS, fault="7:1", timeout=180)
    assert failed.returncode != 0
    assert "injected fault" in failed.stderr and "--resume" in failed.stderr
    assert not os.path.exists(RunPaths(cfg.out).student_card)

    resumed = cli("train", "--out", cfg.out, *DDP_SETTINGS, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "student resumed" in resumed.stdout
    expected, got = load_file(RunPaths(ddp_run.out).student_weights), load_file(RunPaths(cfg.out).student_weights)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
