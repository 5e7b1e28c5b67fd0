"""Promotion and rollback: every path through the CLI's exit codes and the registry's files.

Two runs share one teacher and one set of held-out shards (copies of the shared trained run): `good`
holds its trained student, `weak` the same architecture untrained. Which one is better is then never
in doubt, and no second training is paid for. The last test is `run` on a finished directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline import shards
from pipeline.__main__ import main
from pipeline.errors import (
    EXIT_CONFIG_ERROR,
    EXIT_GATE_FAILED,
    EXIT_OK,
    EXIT_USER_ERROR,
    UserError,
)
from pipeline.evaluate.finished import finished_report
from pipeline.promote import faults, registry
from pipeline.promote.compare import Score, check_comparable, decide
from pipeline.promote.registry import current_student_dir
from pipeline.promote.stage import (
    PromoteConfig,
    RollbackConfig,
    run_promote,
    run_rollback,
)
from pipeline.train.student import build_student, load_student_dir, save_weights
from tests.conftest import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("promote")
    good, weak = str(base / "good"), str(base / "weak")
    shutil.copytree(trained_run.out, good)
    shutil.copytree(trained_run.out, weak)
    _, card, _ = load_student_dir(f"{weak}/student")
    torch.manual_seed(0)
    save_weights(build_student(card.arch, card.kwargs, card.input_shape, card.num_outputs), f"{weak}/student")
    os.remove(f"{weak}/student/student.onnx")  # exported from the trained weights
    return SimpleNamespace(good=good, weak=weak)


def promote(run: str, reg, *options: str) -> int:
    """Through the CLI, for its exit code and messages."""
    return main(["promote", run, "--registry", str(reg), *options])


def promoted(reg, *runs: str) -> None:
    """Through the library (the CLI's parser costs a second per call): a registry's starting state."""
    for run in runs:
        assert run_promote(PromoteConfig(run=run, registry=str(reg))).promoted


def current(reg) -> str:
    return (Path(reg) / "current").read_text()


def history(reg) -> list[tuple]:
    entries = json.loads((Path(reg) / "history.json").read_text())
    return [(e["version"], e["action"], e["previous"]) for e in entries]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_first_promotion_into_an_empty_registry_needs_no_champion(runs, tmp_path, capsys):
    reg = tmp_path / "reg"
    assert promote(runs.weak, reg) == EXIT_OK
    assert "as v0001" in capsys.readouterr().out
    assert current(reg) == "v0001\n" and history(reg) == [("v0001", "promote", None)]
    student = current_student_dir(str(reg))
    assert student == str(reg / "versions" / "v0001" / "student")
    weights = "student.safetensors"
    assert (Path(student) / weights).read_bytes() == (Path(runs.weak) / "student" / weights).read_bytes()
    # The same student again: nothing to do, no second version.
    assert promote(runs.weak, reg) == EXIT_OK
    assert "nothing to do" in capsys.readouterr().out and history(reg) == [("v0001", "promote", None)]


def test_a_better_challenger_is_promoted(runs, tmp_path, capsys):
    reg = tmp_path / "reg"
    promoted(reg, runs.weak)
    assert promote(runs.good, reg) == EXIT_OK
    assert "as v0002" in capsys.readouterr().out and current(reg) == "v0002\n"
    assert history(reg) == [("v0001", "promote", None), ("v0002", "promote", "v0001")]
    compared = json.loads((reg / "history.json").read_text())[1]["compared"]
    assert compared["challenger"]["top1"] > compared["champion"]["top1"]
    assert compared["challenger"]["samples"] == compared["champion"]["samples"] > 0  # the same inputs


def test_a_worse_challenger_is_refused_and_current_is_unchanged(runs, tmp_path, capsys):
    reg = tmp_path / "reg"
    promoted(reg, runs.good)
    before = (reg / "history.json").read_bytes()
    assert promote(runs.weak, reg) == EXIT_GATE_FAILED == 3
    err = one_error_line(capsys)
    assert err.startswith("refused:") and "champion v0001" in err and "v0001 stays current" in err
    assert current(reg) == "v0001\n" and (reg / "history.json").read_bytes() == before
    assert not (reg / "versions" / "v0002").exists()


def test_the_gate_refuses_a_challenger_below_the_bar(runs, tmp_path, capsys):
    reg = tmp_path / "reg"
    assert promote(runs.good, reg, "--min-agreement", "0.999") == EXIT_GATE_FAILED
    assert "--min-agreement 0.999" in one_error_line(capsys)
    assert not reg.exists()  # nothing written, not even the directory


def test_rollback_returns_to_the_previous_version(runs, tmp_path, capsys):
    reg = tmp_path / "reg"
    promoted(reg, runs.weak, runs.good)
    assert main(["rollback", "--registry", str(reg)]) == EXIT_OK
    assert current(reg) == "v0001\n" and history(reg)[-1] == ("v0001", "rollback", "v0002")
    capsys.readouterr()
    assert main(["rollback", "--registry", str(reg)]) == EXIT_USER_ERROR  # v0001 was the first
    assert "no earlier version" in one_error_line(capsys) and current(reg) == "v0001\n"
    # The better student beats the rolled-back one again: a new version, compared afresh.
    promoted(reg, runs.good)
    assert current(reg) == "v0003\n"


def test_a_killed_promotion_leaves_the_old_version_current_and_a_rerun_completes(runs, tmp_path):
    reg = tmp_path / "reg"
    promoted(reg, runs.weak)
    proc = cli("promote", runs.good, "--registry", str(reg), env={faults.PROMOTE_FAULT: "copy"})
    assert proc.returncode == faults.KILLED_EXIT_CODE, proc.stderr[-2000:]
    assert (reg / "versions" / "v0002").exists()  # half written, and nothing points to it
    assert current(reg) == "v0001\n" and current_student_dir(str(reg)).endswith("v0001/student")
    assert promote(runs.good, reg) == EXIT_OK  # the rerun
    assert current(reg) == "v0002\n" and history(reg) == [("v0001", "promote", None), ("v0002", "promote", "v0001")]
    assert (reg / "versions" / "v0002" / "student" / "student.onnx").exists()


class Killed(BaseException):
    """Stands for the process dying at a step (the subprocess test above dies for real)."""


@pytest.mark.parametrize("step", ["pointer", "history"])
def test_a_promotion_stopped_at_a_later_step_is_completed_by_a_rerun(runs, tmp_path, monkeypatch, step):
    reg = tmp_path / "reg"
    promoted(reg, runs.weak)

    def die(at: str) -> None:
        if at == step:
            raise Killed(at)

    monkeypatch.setattr(registry.faults, "maybe_die", die)
    with pytest.raises(Killed):
        run_promote(PromoteConfig(run=runs.good, registry=str(reg)))
    monkeypatch.undo()
    assert current(reg) == ("v0001\n" if step == "pointer" else "v0002\n")  # old or new, both complete
    assert history(reg) == [("v0001", "promote", None)]
    result = run_promote(PromoteConfig(run=runs.good, registry=str(reg)))
    assert result.version == "v0002" and result.action == ("promoted" if step == "pointer" else "current")
    assert history(reg) == [("v0001", "promote", None), ("v0002", "promote", "v0001")]


def test_two_promotions_at_once_one_wins_the_other_stops(runs, tmp_path, capsys):
    reg, go = tmp_path / "reg", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-m", "pipeline", "promote", runs.good, "--registry", str(reg)],
                             env={**os.environ, faults.PROMOTE_HOLD: str(go)}, cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(f"{go}.held") and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(f"{go}.held"), first.communicate()[1][-2000:]  # the first holds the registry
        assert promote(runs.weak, reg) == EXIT_USER_ERROR
        err = one_error_line(capsys)
        assert "in use by another promotion" in err and f"pid {first.pid}" in err
        go.touch()
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == EXIT_OK, stderr[-2000:]
    assert current(reg) == "v0001\n" and history(reg) == [("v0001", "promote", None)]


def test_the_registry_works_on_a_file_uri(runs, tmp_path):
    uri = (tmp_path / "reg").as_uri()
    assert uri.startswith("file:///")
    first = run_promote(PromoteConfig(run=runs.weak, registry=uri))
    second = run_promote(PromoteConfig(run=runs.good, registry=uri))
    assert (first.action, first.version, second.action, second.version) == ("promoted", "v0001", "promoted", "v0002")
    assert second.challenger["top1"] > second.champion_metrics["top1"]
    assert current(tmp_path / "reg") == "v0002\n"
    back = run_rollback(RollbackConfig(registry=uri))
    assert (back.version, back.previous) == ("v0001", "v0002") and current(tmp_path / "reg") == "v0001\n"


def test_user_errors_are_one_line_and_write_nothing(runs, tmp_path, capsys):
    reg = tmp_path / "reg"
    (tmp_path / "empty").mkdir()
    assert promote(str(tmp_path / "empty"), reg) == EXIT_USER_ERROR
    assert "No trained student" in one_error_line(capsys)
    assert promote(str(tmp_path / "missing"), reg) == EXIT_USER_ERROR
    assert "does not exist" in one_error_line(capsys)
    assert main(["rollback", "--registry", str(reg)]) == EXIT_USER_ERROR
    assert "does not exist" in one_error_line(capsys)
    assert not reg.exists()
    assert promote(runs.good, reg, "--tolerance", "-1") == EXIT_CONFIG_ERROR
    assert "--tolerance" in one_error_line(capsys)
    promoted(reg, runs.weak)
    (reg / "current").write_text("v0009\n")
    assert promote(runs.good, reg) == EXIT_USER_ERROR
    assert "damaged" in one_error_line(capsys)


def test_a_regression_compares_relative_error_lower_is_better():
    def verdict(challenger: float, champion: float | None, max_rel_error: float | None = None):
        held = Score(champion, {"samples": 64}) if champion else None
        return decide("regression", Score(challenger, {"samples": 64}), held, champion and "v0001", 0.001,
                      None, max_rel_error, "p95")

    assert verdict(0.0100, None).promote  # first version
    assert verdict(0.0105, 0.0100).promote  # worse, within the tolerance
    refused = verdict(0.0120, 0.0100)
    assert not refused.promote and "above the champion v0001's" in refused.reason
    assert not verdict(0.02, None, max_rel_error=0.01).promote  # the gate, even into an empty registry


def test_a_champion_that_takes_other_inputs_cannot_be_compared(runs):
    _, card, _ = load_student_dir(f"{runs.good}/student")
    manifest = shards.require_manifest(f"{runs.good}/shards/heldout")
    check_comparable(card, manifest, "v0001", "heldout")  # the same shapes: fine
    other = dataclasses.replace(card, input_shape=[3, 32, 32])
    with pytest.raises(UserError, match=r"champion v0001 .* cannot be compared"):
        check_comparable(other, manifest, "v0001", "heldout")


def test_run_on_a_finished_directory_does_no_work_and_says_so(trained_run, tmp_path, capsys):
    from pipeline.evaluate.stage import run_eval_stage

    out = tmp_path / "run"
    shutil.copytree(trained_run.out, out)
    cfg = dataclasses.replace(trained_run, out=str(out), eval=dataclasses.replace(trained_run.eval, latency=False))
    assert finished_report(cfg) is None  # no report yet: eval has work
    run_eval_stage(cfg)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != ".lock"}
    argv = ["run", "--out", str(out), "--config", str(out / "config.yaml")]
    assert main(argv) == EXIT_OK
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0] == f"nothing to do: {out} is finished with this config and teacher"
    assert "teacher reused" not in stdout and "student reused" not in stdout  # no stage ran
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != ".lock"} == before  # nothing written
    # The gate is applied to the finished run's report all the same.
    assert main([*argv, "--min-agreement", "0.9999"]) == EXIT_GATE_FAILED
    # Another config is refused as every stage refuses it; a missing student means work to do.
    with pytest.raises(UserError, match="different config"):
        finished_report(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=3)))
    os.remove(out / "student" / "student.safetensors")
    assert finished_report(cfg) is None
