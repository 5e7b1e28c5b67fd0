"""What a scheduler's log holds: progress lines a person reads (no bar redraws, no third-party
chatter) outside a terminal, one JSON object per event with --log-format json, nothing but results
with --quiet."""

import json
import os
import re

import pytest

from pipeline.run import output
from tests.conftest import cli
TINY = os.path.join(os.path.dirname(__file__), "..", "pipeline", "configs", "tiny.yaml")

# Every stderr line of a text-mode run outside a terminal is one of these.
PERSON_LINES = re.compile(
    r"^(teacher .+: [\d,]+/[\d,]+ epochs \(\d+%\), .+"
    r"|label (train|heldout): [\d,]+/[\d,]+ samples \(\d+%\), .+"
    r"|train: [\d,]+/[\d,]+ steps \(\d+%\), .+"
    r"|INFO: .+|WARNING: .+)$")


@pytest.fixture(scope="module")
def json_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("json") / "run")
    proc = cli("run", "--config", TINY, "--out", out, "--log-format", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_json_mode_prints_one_object_per_event(json_run):
    _, proc = json_run
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {e["event"] for e in events} <= {"progress", "done", "log", "note"}
    done = {e["stage"] for e in events if e["event"] == "done"}
    assert {"label train", "label heldout", "train"} <= done and any(s.startswith("teacher") for s in done)
    train_done = next(e for e in events if e["event"] == "done" and e["stage"] == "train")
    assert train_done["done"] == train_done["total"] and train_done["unit"] == "step"
    assert all(r["event"] == "result" and r["stage"] == "run" for r in results)
    assert any("top-1 agreement" in r["message"] for r in results)


def test_quiet_prints_results_only(json_run):
    out, _ = json_run
    proc = cli("eval", out, "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "" and "top-1 agreement" in proc.stdout


def test_errors_follow_the_format(json_run):
    out, _ = json_run
    proc = cli("eval", out, "--min-agreement", "1.0", "--log-format", "json")
    assert proc.returncode == 3
    (error,) = [json.loads(line) for line in proc.stderr.splitlines()]
    assert error["event"] == "error" and error["exit_code"] == 3 and "agreement" in error["message"]


def test_progress_lines_come_every_few_seconds_not_every_update(monkeypatch, capsys):
    monkeypatch.setenv(output.ENV, "text")
    clock = iter(range(0, 1000, 1))  # one second per call
    monkeypatch.setattr(output.time, "monotonic", lambda: next(clock))
    with output.Progress("work", 100, "item") as progress:
        for _ in range(100):
            progress.update(1)
    lines = capsys.readouterr().err.splitlines()
    # ~100 s of work, a line every LINE_EVERY_S seconds and one at the end; never one per update.
    assert 5 <= len(lines) <= 100 / output.LINE_EVERY_S + 2, lines
    assert lines[-1].startswith("work: 100/100 items (100%)")
