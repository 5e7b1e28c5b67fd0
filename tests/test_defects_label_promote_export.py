"""Regressions: labeling that fails in a caller's Ray, promote/rollback output modes, a failed ONNX export.

- A label stage that stops on an error kills its teacher actors (a caller's Ray would otherwise keep
  them, and their CPUs, until the driver exits), records the shards that came back, and tries a lost
  shard exactly 1 + label.max_retries times (one retry layer, not Ray's and the stage's multiplied).
- `promote` and `rollback` report through the same channel as every command: --log-format json gives
  one JSON object per line, --quiet only results.
- A run whose student could not be exported to ONNX is finished once its report exists: a second
  `run` does not evaluate it again.

Faults are injected in this process (monkeypatch) or in the actors, by a Labeler subclass defined
inside a function so that Ray ships it by value to the shared Ray's workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import pytest
import ray
import torch

from pipeline import shards
from pipeline.__main__ import main
from pipeline.errors import EXIT_GATE_FAILED, EXIT_OK, RetriesExhausted
from pipeline.evaluate.finished import finished_report
from pipeline.label import pool as pool_module
from pipeline.label import stage as label_stage
from pipeline.label.actor import Labeler, TeacherFailed
from pipeline.label.generation import Generation
from pipeline.label.stage import label_split, run_label_stage
from pipeline.run import rundir
from pipeline.run.rundir import RunPaths
from pipeline.teach.load import read_card
from pipeline.train.export import export_failure_path, onnx_path
from pipeline.train.stage import run_train_stage
from pipeline.train.student import build_student, load_student_dir, save_weights
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("ray_local")


def run_with_teacher(tmp_path, labeled_run, name="run", **sections):
    """A run dir holding `labeled_run`'s teacher but no shards."""
    cfg = tiny_config(tmp_path / name, **sections)
    shutil.copytree(os.path.join(labeled_run.out, "teacher"), os.path.join(cfg.out, "teacher"))
    rundir.record(cfg)
    return cfg


def faulty_labeler(split: str, index: int, attempts_file: str | None = None, crash: bool = False) -> type:
    """A Labeler that fails on shard `index` of `split` (the teacher raises, or with `crash` its
    process dies), appending a line to `attempts_file` on each attempt; every other shard is labeled."""

    class FaultyLabeler(Labeler):
        def label(self, generated, job):
            if (job.split, job.index) == (split, index):
                if attempts_file:
                    with open(attempts_file, "a") as f:
                        f.write("attempt\n")
                if crash:
                    os._exit(1)
                raise TeacherFailed("injected teacher failure")
            return Labeler.label(self, generated, job)

    return FaultyLabeler


def record_pools(monkeypatch) -> list:
    """The label stage's actor pools, as it makes them."""
    pools = []

    class RecordedPool(pool_module.LabelerPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(label_stage, "LabelerPool", RecordedPool)
    return pools


def assert_killed(actor, within_s: float = 20) -> None:
    """`actor` is dead: ray.kill takes effect shortly after it returns, so a call may still succeed."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=within_s)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.2)
    pytest.fail(f"{actor} is still alive {within_s:g} s after labeling ended")


def attempts(path) -> int:
    return len(open(path).read().splitlines()) if os.path.exists(path) else 0


def test_a_failed_label_stage_kills_its_actors_and_keeps_the_shards_done(tmp_path, labeled_run, monkeypatch):
    cfg = run_with_teacher(tmp_path, labeled_run)
    # No periodic save: only the error path can have written the manifest.
    monkeypatch.setattr(label_stage, "MANIFEST_SAVE_INTERVAL_S", 1e9)
    monkeypatch.setattr(pool_module, "Labeler", faulty_labeler("train", 2))
    pools = record_pools(monkeypatch)
    with pytest.raises(TeacherFailed, match="train shard 2"):
        run_label_stage(cfg)
    (pool,) = pools
    for actor in pool.actors:
        assert_killed(actor)
    # One actor, two shards in flight: shards 0 and 1 came back before shard 2 failed.
    split_dir = RunPaths(cfg.out).split("train")
    assert sorted(shards.load_manifest(split_dir).shards) == [0, 1]
    # The rerun labels only what is left, into the same bytes as an undisturbed run.
    monkeypatch.setattr(pool_module, "Labeler", Labeler)
    result = run_label_stage(cfg)
    assert (result.splits["train"].written, result.splits["train"].skipped) == (1, 2)
    reference = shards.require_manifest(RunPaths(labeled_run.out).split("train"))
    assert [r.sha256 for r in shards.require_manifest(split_dir).records()] == \
        [r.sha256 for r in reference.records()]
    for actor in pools[-1].actors:
        assert_killed(actor)


def test_a_lost_shard_is_tried_exactly_one_plus_max_retries_times(tmp_path, labeled_run, monkeypatch):
    cfg = run_with_teacher(tmp_path, labeled_run, data={"shards": 1}, label={"max_retries": 1})
    tries = str(tmp_path / "attempts")
    monkeypatch.setattr(pool_module, "Labeler", faulty_labeler("train", 0, tries, crash=True))
    pools = record_pools(monkeypatch)
    with pytest.raises(RetriesExhausted, match="train shard 0 was lost 2 times"):
        run_label_stage(cfg)
    assert attempts(tries) == 1 + cfg.label.max_retries  # Ray's retries on top would make it (1 + 1)^2
    for actor in pools[0].actors:  # restartable actors: only the stage's kill ends them
        assert_killed(actor)


def test_a_lost_generation_task_counts_as_an_attempt_of_its_shard(tmp_path, labeled_run, monkeypatch):
    """Inputs made in a task beside the teacher (GPU actors): that task's loss redoes the shard too,
    within the same 1 + label.max_retries attempts, and ends in RetriesExhausted, not a traceback."""
    cfg = run_with_teacher(tmp_path, labeled_run, data={"shards": 1}, label={"max_retries": 1})
    paths = RunPaths(cfg.out)
    tries = str(tmp_path / "attempts")

    def crashing_generator():
        with open(tries, "a") as f:
            f.write("attempt\n")
        os._exit(1)

    class GeneratingPool(pool_module.LabelerPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.on_cpu = False  # as with GPU actors: generation runs in its own task

    pool = GeneratingPool(cfg, paths, read_card(paths), cfg.data.space)
    try:
        with pytest.raises(RetriesExhausted, match="train shard 0 was lost 2 times"):
            label_split(cfg, paths, "train", 1, cfg.data.seed, read_card(paths),
                        lambda job: Generation(crashing_generator, ()), lambda: pool, "hash", {})
    finally:
        pool.shutdown()
    assert attempts(tries) == 1 + cfg.label.max_retries


# promote and rollback: output modes


@pytest.fixture(scope="module")
def two_runs(trained_run, tmp_path_factory):
    """`good`: the shared trained run; `weak`: the same with an untrained student (as tests/test_promote.py)."""
    base = tmp_path_factory.mktemp("promote-output")
    good, weak = str(base / "good"), str(base / "weak")
    shutil.copytree(trained_run.out, good)
    shutil.copytree(trained_run.out, weak)
    _, card, _ = load_student_dir(f"{weak}/student")
    torch.manual_seed(0)
    save_weights(build_student(card.arch, card.kwargs, card.input_shape, card.num_outputs), f"{weak}/student")
    os.remove(f"{weak}/student/student.onnx")
    return good, weak


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # fails on any line that is not one object


def test_promote_and_rollback_follow_log_format_json_and_quiet(two_runs, tmp_path, capsys):
    good, weak = two_runs
    reg = str(tmp_path / "reg")
    capsys.readouterr()

    def command(*argv: str) -> tuple[int, list[dict], list[dict]]:
        code = main([*argv, "--log-format", "json"])
        captured = capsys.readouterr()
        return code, json_lines(captured.out), json_lines(captured.err)

    code, out, err = command("promote", weak, "--registry", reg)
    assert code == EXIT_OK and [e for e in err if e["event"] != "log"] == []
    (result,) = out
    assert (result["event"], result["stage"], result["action"], result["version"]) == \
        ("result", "promote", "promoted", "v0001")
    assert "as v0001" in result["message"] and result["registry"] == reg and result["champion"] is None
    code, out, _ = command("promote", good, "--registry", reg)
    assert code == EXIT_OK and [(r["action"], r["version"], r["champion"]) for r in out] == \
        [("promoted", "v0002", "v0001")]
    assert out[0]["challenger_metrics"]["top1"] > out[0]["champion_metrics"]["top1"]
    code, out, _ = command("promote", good, "--registry", reg)
    assert code == EXIT_OK and [(r["action"], r["version"]) for r in out] == [("current", "v0002")]
    assert out[0]["message"].startswith("nothing to do")
    # A refusal: one error event on stderr, exit code 3, nothing on stdout.
    code, out, err = command("promote", weak, "--registry", reg)
    assert code == EXIT_GATE_FAILED and out == []
    (error,) = [e for e in err if e["event"] != "log"]
    assert error["event"] == "error" and error["exit_code"] == EXIT_GATE_FAILED
    assert error["message"].startswith("refused:") and "v0002 stays current" in error["message"]
    code, out, _ = command("rollback", "--registry", reg)
    assert code == EXIT_OK and [(r["stage"], r["action"], r["version"], r["previous"]) for r in out] == \
        [("rollback", "rollback", "v0001", "v0002")]
    # --quiet: the result line as text on stdout, nothing on stderr.
    assert main(["rollback", "--registry", reg, "--quiet"]) == 1  # v0001 was the first: a user error
    capsys.readouterr()
    assert main(["promote", good, "--registry", reg, "--quiet"]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith(f"promoted {good} as v0003")


# A failed ONNX export


def test_a_run_whose_export_failed_is_finished_once_its_report_exists(trained_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained_run.out, out)
    os.remove(onnx_path(str(out / "student")))  # as if the train stage's export had not happened yet

    def failing_export(*args, **kwargs):
        raise RuntimeError("injected: an operator ONNX lacks")

    monkeypatch.setattr("pipeline.train.stage.export_onnx", failing_export)
    argv = ["run", "--out", str(out), "--config", str(out / "config.yaml"), "--eval.latency", "false"]
    assert main(argv) == EXIT_OK
    captured = capsys.readouterr()
    assert "Could not export the student to ONNX (RuntimeError: injected" in captured.err  # the warning stays
    student_dir = str(out / "student")
    assert not os.path.exists(onnx_path(student_dir))
    report = out / "report.json"
    evaluated = report.stat().st_mtime_ns
    # The second run finds the run finished: no stage runs, nothing is evaluated again.
    assert main(argv) == EXIT_OK
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0] == f"nothing to do: {out} is finished with this config and teacher"
    assert report.stat().st_mtime_ns == evaluated
    assert "injected" in json.loads(open(export_failure_path(student_dir)).read())["error"]
    cfg = dataclasses.replace(trained_run, out=str(out))
    # A failure recorded before the weights were last written was an earlier student's: not finished.
    failure = export_failure_path(student_dir)
    weights = os.stat(f"{student_dir}/{rundir.STUDENT_WEIGHTS}").st_mtime
    os.utime(failure, (weights - 10, weights - 10))
    assert finished_report(cfg) is None
    # An export that works later writes student.onnx and drops the recorded failure.
    monkeypatch.undo()
    run_train_stage(cfg)
    assert os.path.exists(onnx_path(student_dir)) and not os.path.exists(failure)
    assert finished_report(cfg) is not None
