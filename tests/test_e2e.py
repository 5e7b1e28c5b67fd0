"""The whole pipeline through its CLI, as a user runs it: tiny config, embedded Ray."""

import json
import os
import re

import pytest

from tests.conftest import cli
from tests.test_output import PERSON_LINES

TINY = os.path.join(os.path.dirname(__file__), "..", "pipeline", "configs", "tiny.yaml")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("e2e") / "run")
    proc = cli("run", "--config", TINY, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_run_writes_the_report_contract(tiny_run):
    out, proc = tiny_run
    report = json.load(open(os.path.join(out, "report.json")))
    for split in ("train", "heldout"):
        for key in ("top1", "top5", "kl"):
            assert isinstance(report["agreement"][split][key], float)
        assert 0 <= report["agreement"][split]["top1"] <= report["agreement"][split]["top5"] <= 1
        assert report["agreement"][split]["kl"] >= 0
    assert 0 <= report["accuracy"]["teacher"] <= 1 and 0 <= report["accuracy"]["student"] <= 1
    assert isinstance(report["params"]["teacher"], int) and isinstance(report["params"]["student"], int)
    assert os.path.exists(os.path.join(out, "report.md"))
    assert "top-1 agreement" in proc.stdout


def test_rerun_is_idempotent(tiny_run):
    out, _ = tiny_run
    before = open(os.path.join(out, "student", "student.safetensors"), "rb").read()
    proc = cli("run", "--config", TINY, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"nothing to do: {out} is finished with this config and teacher" in proc.stdout
    assert "teacher reused" not in proc.stdout and "top-1 agreement" in proc.stdout  # no stage ran; the summary
    assert open(os.path.join(out, "student", "student.safetensors"), "rb").read() == before


def test_a_different_config_in_the_same_directory_is_refused(tiny_run):
    out, _ = tiny_run
    files = {p: open(os.path.join(out, p), "rb").read() for p in ("config.yaml", "report.json")}
    proc = cli("run", "--config", TINY, "--out", out, "--train.max_epochs", "3")
    assert proc.returncode == 1
    assert "holds a run of a different config" in proc.stderr and "train.max_epochs" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(open(os.path.join(out, p), "rb").read() == data for p, data in files.items())


def test_stages_continue_the_run_recorded_in_the_directory(tiny_run):
    out, _ = tiny_run
    proc = cli("eval", out, "--min-agreement", "1.01")
    assert proc.returncode == 2  # out of range: a config error
    proc = cli("eval", out, "--min-agreement", "0.0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "promotion gate" in proc.stdout


def test_user_mistakes_get_one_sentence_and_a_nonzero_exit(tmp_path):
    proc = cli("run", "--out", str(tmp_path / "a"), "--teacher.checkpoint", str(tmp_path / "missing.safetensors"))
    assert proc.returncode == 1
    assert "missing.safetensors does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "a").exists()
    proc = cli("train", "--out", str(tmp_path / "b"))
    assert proc.returncode == 1 and "holds no run" in proc.stderr
    assert not (tmp_path / "b").exists()
    proc = cli("run", "--out", str(tmp_path / "c"), "--data.shards", "three")
    assert proc.returncode == 2 and "data.shards" in proc.stderr


def test_a_run_outside_a_terminal_prints_lines_meant_for_a_person(tiny_run):
    """Text mode, stderr not a terminal (as under CI, cron, Kubernetes): a tiny run's whole log."""
    _, proc = tiny_run
    log = proc.stdout + proc.stderr
    assert "\r" not in log and "\x1b[" not in log  # no bar redraws, no cursor movement
    assert not re.search(r"Tip:|GPU available|TPU available|it/s\]|Warning|deprecated|Token authentication", log)
    odd = [line for line in proc.stderr.splitlines() if not PERSON_LINES.match(line)]
    assert not odd, odd
    for stage in ("teacher cnn", "label train", "label heldout", "train"):  # each stage says when it is done
        assert re.search(rf"^{stage}.*\(100%\)", proc.stderr, re.M), stage
    assert len(log.encode()) < 16 * 1024
