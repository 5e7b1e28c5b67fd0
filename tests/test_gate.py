"""The promotion gate through the CLI: exit 0 when held-out agreement reaches the bar, exit 3 (and
a line on stderr, and the report still written) when it does not; from the flag or the config key."""

import json
import os
import shutil

import pytest

from pipeline.__main__ import main
from pipeline.errors import EXIT_GATE_FAILED, EXIT_OK
from tests.conftest import cli

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
FAST = ["--eval.latency", "false"]  # the gate does not need latency figures; keep the test quick


@pytest.fixture
def run_dir(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run.out, out)
    return str(out)


def heldout_top1(run_dir):
    return json.load(open(os.path.join(run_dir, "report.json")))["agreement"]["heldout"]["top1"]


def test_gate_passes_and_fails_through_the_cli(run_dir, capsys):
    # Passing is exit 0, as test_e2e sees through the CLI; here, in this process, to keep the test quick.
    assert main(["eval", run_dir, "--min-agreement", "0.0", *FAST]) == EXIT_OK
    out = capsys.readouterr().out
    assert "promotion gate" in out and "passed" in out
    top1 = heldout_top1(run_dir)
    assert top1 < 0.999  # a 2-epoch student: there is room above it for a bar it misses
    bar = round(top1 + 0.001, 4)
    proc = cli("eval", run_dir, "--min-agreement", str(bar), *FAST)
    assert proc.returncode == EXIT_GATE_FAILED == 3
    err = proc.stderr.strip().splitlines()[-1]
    assert "promotion gate" in err and "FAILED" in err and str(bar) in err and "Traceback" not in proc.stderr
    report = json.load(open(os.path.join(run_dir, "report.json")))  # written all the same, for the record
    assert report["gate"] == {"min_agreement": bar, "passed": False}


def test_gate_from_the_config_key(run_dir, tmp_path, capsys):
    assert main(["eval", run_dir, "--eval.min_agreement", "0.0", *FAST]) == EXIT_OK
    top1_bar = round(heldout_top1(run_dir) + 0.001, 4)
    config = tmp_path / "gate.yaml"
    config.write_text(f"eval:\n  min_agreement: {top1_bar}\n  latency: false\n")
    assert main(["eval", run_dir, "--config", str(config)]) == EXIT_GATE_FAILED
    assert "FAILED" in capsys.readouterr().err
    # The gate on the bar exactly met passes: ">=" not ">".
    assert main(["eval", run_dir, "--min-agreement", repr(heldout_top1(run_dir)), *FAST]) == EXIT_OK


def test_without_a_bar_there_is_no_gate(run_dir):
    assert main(["eval", run_dir, *FAST]) == EXIT_OK
    assert json.load(open(os.path.join(run_dir, "report.json")))["gate"] == {
        "min_agreement": None, "passed": None}


def test_the_exit_code_is_documented():
    table = open(README).read()
    assert "| 3 |" in table and "promotion gate" in table
