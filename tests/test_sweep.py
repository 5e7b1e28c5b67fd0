"""The capacity sweep: which trials it plans, which student it marks, and a tiny sweep on Ray that
trains two sizes, measures them, reuses them on a rerun and adds itself to an existing report."""

import dataclasses
import json
import shutil

import pytest
from safetensors.torch import load_file

from pipeline.__main__ import parse
from pipeline.config import SweepConfig
from pipeline.errors import ConfigError, UserError
from pipeline.evaluate.render import write_report
from pipeline.evaluate.report import Report
from pipeline.run.rundir import RunPaths
from pipeline.sweep.stage import plan, run_sweep, smallest_reaching, target_of
from students import STUDENTS
from teachers import count_parameters
from tests.conftest import tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def trial(name, params, heldout):
    return {"name": name, "params": params, "agreement": {"train": heldout, "heldout": heldout}}


def test_smallest_reaching_is_the_fewest_parameters_at_or_above_the_target():
    trials = [trial("a", 100, 0.90), trial("b", 400, 0.99), trial("c", 1600, 0.995), trial("d", 6400, 0.97)]
    assert smallest_reaching(trials, 0.99)["name"] == "b"
    assert smallest_reaching(trials, 0.90)["name"] == "a"
    assert smallest_reaching(trials, 0.999) is None
    assert smallest_reaching([trial("e", 10, None)], 0.0) is None


def test_plan_crosses_widths_and_depths_and_defaults_to_the_runs_student(tmp_path):
    cfg = tiny_config(tmp_path, sweep={"widths": [32, 8, 32]})
    assert [t.name for t in plan(cfg)] == [f"mlp-w8-d{cfg.student.depth}", f"mlp-w32-d{cfg.student.depth}"]
    cfg = tiny_config(tmp_path, sweep={"widths": [8, 16], "depths": [1, 2], "arch": "cnn"})
    assert [t.name for t in plan(cfg)] == ["cnn-w8-d1", "cnn-w16-d1", "cnn-w8-d2", "cnn-w16-d2"]


def test_the_target_comes_from_the_sweep_then_the_gate_then_the_default(tmp_path):
    assert target_of(tiny_config(tmp_path)) == 0.99
    assert target_of(tiny_config(tmp_path, eval={"min_agreement": 0.9})) == 0.9
    assert target_of(tiny_config(tmp_path, eval={"min_agreement": 0.9}, sweep={"target_agreement": 0.8})) == 0.8


def test_sweep_settings_parse_from_the_command_line_and_are_checked():
    _, cfg = parse(["sweep", "/nonexistent/run", "--sweep.widths", "[8,16]", "--sweep.target_agreement", "0.9"])
    assert cfg.out == "/nonexistent/run" and cfg.sweep.widths == [8, 16] and cfg.sweep.target_agreement == 0.9
    with pytest.raises(ConfigError, match="sweep.widths"):
        SweepConfig(widths=[])


def test_an_unknown_architecture_is_refused_before_any_trial(labeled_run, tmp_path):
    shutil.copytree(labeled_run.out, tmp_path / "run")
    cfg = dataclasses.replace(labeled_run, out=str(tmp_path / "run"), sweep=SweepConfig(arch="transformer"))
    with pytest.raises(UserError, match="sweep.arch 'transformer' is neither one of the built-in architectures"):
        run_sweep(cfg)
    assert not (tmp_path / "run" / "sweep").exists()


def test_a_tiny_sweep_on_ray(labeled_run, ray_local, tmp_path):
    shutil.copytree(labeled_run.out, tmp_path / "run")
    cfg = dataclasses.replace(labeled_run, out=str(tmp_path / "run"),
                              sweep=SweepConfig(widths=[16, 4], target_agreement=0.0))
    cfg.eval = dataclasses.replace(cfg.eval, latency_seconds=0.01)
    paths = RunPaths(cfg.out)
    # A report already there gets the sweep added (as after `run`, then `sweep`).
    write_report(paths, Report(agreement={"train": {"top1": 0.5, "top5": 0.9, "kl": 0.1, "samples": 1}},
                               accuracy={"teacher": 0.9, "student": 0.5, "test_samples": 1},
                               params={"teacher": 1000, "student": 100}))
    done = []
    sweep = run_sweep(cfg, on_done=lambda result, n, total: done.append((result["name"], n, total)))

    names = [t["name"] for t in sweep["trials"]]
    depth = cfg.student.depth
    assert names == [f"mlp-w4-d{depth}", f"mlp-w16-d{depth}"]  # sorted by parameters
    assert {d[0] for d in done} == set(names) and sorted(d[1] for d in done) == [1, 2] and {d[2] for d in done} == {2}
    for t, width in zip(sweep["trials"], (4, 16)):
        model = STUDENTS.build("mlp", input_shape=(1, 8, 8), num_outputs=10, width=width, depth=depth)
        assert t["params"] == count_parameters(model)
        model.load_state_dict(load_file(f"{cfg.out}/{t['dir']}/student.safetensors"))  # the trial's own weights
        assert t["trained"] and t["epochs"] == cfg.train.max_epochs
        assert all(0 <= t["agreement"][s] <= 1 for s in ("train", "heldout"))
        assert t["latency"]["batch1_ms"] > 0 and t["latency"]["batch256_ms"] > 0
    assert sweep["smallest"]["name"] == names[0]  # target 0: the smallest student reaches it
    assert sweep["teacher"]["params"] > 0 and sweep["teacher"]["latency"]["batch1_ms"] > 0

    assert json.load(open(f"{cfg.out}/sweep/sweep.json")) == sweep
    assert open(f"{cfg.out}/sweep/sweep.png", "rb").read().startswith(PNG_MAGIC)
    report = json.load(open(paths.report_json))
    assert [t["name"] for t in report["sweep"]["trials"]] == names
    assert open(f"{cfg.out}/plots/sweep.png", "rb").read().startswith(PNG_MAGIC)
    assert "Capacity sweep" in open(f"{cfg.out}/report.html").read()

    # A rerun reuses finished trials: nothing is trained again, weights unchanged.
    before = open(f"{cfg.out}/{sweep['trials'][0]['dir']}/student.safetensors", "rb").read()
    again = run_sweep(dataclasses.replace(cfg, sweep=SweepConfig(widths=[16, 4], target_agreement=1.0)))
    assert [t["trained"] for t in again["trials"]] == [False, False]
    assert open(f"{cfg.out}/{sweep['trials'][0]['dir']}/student.safetensors", "rb").read() == before
    assert again["smallest"] is None  # no student of a 2-epoch run agrees perfectly


def test_a_student_by_import_path_is_swept_through_its_keyword_arguments():
    from pipeline.config import StudentConfig
    from pipeline.sweep.stage import Trial

    base = StudentConfig(arch="mypkg.models:small", kwargs={"hidden": 5})
    trial = Trial("mypkg.models:small", 32, 2)
    student = trial.student(base)
    assert student.arch == "mypkg.models:small" and student.kwargs == {"hidden": 5, "width": 32, "depth": 2}
    assert trial.name == "mypkg.models-small-w32-d2"  # a folder name, not an import path
    built_in = Trial("mlp", 16, 3).student(StudentConfig())
    assert (built_in.width, built_in.depth, built_in.kwargs) == (16, 3, {})
