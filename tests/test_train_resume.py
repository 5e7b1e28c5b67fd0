"""Checkpoints and --resume: a killed run continues to the weights an unbroken run reaches."""

import csv
import dataclasses
import glob
import io
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pipeline.run import storage
from pipeline.__main__ import main, parse
from pipeline.train.checkpoints import AtomicCheckpointIO, read_checkpoint
from pipeline.config import result_fields
from pipeline.errors import UserError
from pipeline.run.rundir import RunPaths
from tests.conftest import cli as run_cli
from pipeline.train.faults import KILLED_EXIT_CODE, TRAIN_FAULT

# 768 rows / 64 = 12 steps an epoch, 2 epochs; a checkpoint every 5 steps.
SETTINGS = ["--train.checkpoint_every_steps", "5", "--train.deterministic", "true"]


def cli(*args, fault=None, timeout=240):
    return run_cli(*args, env={TRAIN_FAULT: fault} if fault else None, timeout=timeout)


def copy_run(cfg, dest):
    shutil.copytree(cfg.out, dest)
    return dataclasses.replace(cfg, out=str(dest))


def epoch_curves(student_dir):
    """(epoch, train/agreement, train/loss) of every epoch logged, over all the run's CSV logs."""
    rows = set()
    for path in glob.glob(os.path.join(student_dir, "logs", "*", "metrics.csv")):
        for row in csv.DictReader(open(path)):
            if row.get("train/agreement"):
                rows.add((int(row["epoch"]), row["train/agreement"], row["train/loss"]))
    return sorted(rows)


def test_killed_run_resumes_mid_epoch_to_the_weights_of_an_unbroken_run(labeled_run, tmp_path, capsys):
    unbroken = copy_run(labeled_run, tmp_path / "unbroken")
    broken = copy_run(labeled_run, tmp_path / "broken")
    done = cli("train", "--out", unbroken.out, *SETTINGS)
    assert done.returncode == 0, done.stderr[-3000:]

    # Killed outright (no cleanup) after step 8, midway through the first epoch; the last checkpoint
    # is from step 5.
    killed = cli("train", "--out", broken.out, *SETTINGS, fault="8:exit")
    assert killed.returncode == KILLED_EXIT_CODE, killed.stderr[-3000:]
    paths = RunPaths(broken.out)
    assert not os.path.exists(paths.student_card)
    checkpoint = read_checkpoint(os.path.join(paths.student_dir, "checkpoints", "last.ckpt"))
    assert checkpoint["global_step"] == 5
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 5

    # Without --resume the interrupted run is not silently thrown away.
    # (In this process: the refusal comes before any training.)
    assert main(["train", "--out", broken.out, *SETTINGS]) == 1
    refused = capsys.readouterr().err
    assert "--resume" in refused and "Traceback" not in refused

    resumed = cli("train", "--out", broken.out, *SETTINGS, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "student resumed" in resumed.stdout
    expected, got = load_file(RunPaths(unbroken.out).student_weights), load_file(paths.student_weights)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ from the unbroken run's"
    # The interrupted epoch's agreement and loss are those of the whole epoch, as in the unbroken run.
    assert epoch_curves(paths.student_dir)[-2:] == epoch_curves(RunPaths(unbroken.out).student_dir)


def test_resume_is_an_execution_option_not_part_of_the_run():
    _, plain = parse(["train", "--out", "/nonexistent/run"])
    _, resumed = parse(["train", "--out", "/nonexistent/run", "--resume"])
    assert resumed.train.resume and not plain.train.resume
    assert result_fields(resumed) == result_fields(plain)


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io_plugin = AtomicCheckpointIO()
    io_plugin.save_checkpoint({"global_step": 5, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    class RenameFails:  # the filesystem, except that the final rename fails (disk full, lost mount)
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, src, dest):
            raise OSError("disk full")

    resolve = storage.resolve
    monkeypatch.setattr(storage, "resolve", lambda p: (lambda fs, q: (RenameFails(fs), q))(*resolve(p)))
    with pytest.raises(OSError):
        io_plugin.save_checkpoint({"global_step": 10, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert io_plugin.load_checkpoint(path)["global_step"] == 5


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_are_loaded_without_unpickling_code(tmp_path):
    path = tmp_path / "evil.ckpt"
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "x": Payload()}, buffer, pickle_module=pickle)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match="cannot be read as a training checkpoint"):
        read_checkpoint(str(path))
