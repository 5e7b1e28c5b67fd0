"""Surrogates of simulators: a cheap analytic simulator through the CLI, and each bad input."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from tests.conftest import cli

SIMULATORS = '''
import numpy as np

TIMES = np.linspace(0.0, 1.0, 8)


class Decay:
    """u(t) = A exp(-k t) at 8 times: an analytic "simulator" with a declared version."""

    version = "decay-1"

    def __call__(self, x):
        k, a = x[:, 0:1], x[:, 1:2]
        return a * np.exp(-k * TIMES)


class Flaky(Decay):
    """Raises on any batch holding a point with k in [1.50, 1.56): its rows are rejected."""

    def __call__(self, x):
        if ((x[:, 0] >= 1.50) & (x[:, 0] < 1.56)).any():
            raise FloatingPointError("the solver diverged")
        return super().__call__(x)


def broken(x):
    raise RuntimeError("license server unreachable")


def flat(x):
    return x[:, 0]  # one number per sample, not a vector: the wrong shape
'''

BOX = ['--data.parameters', '[{"name": "k", "low": 0.1, "high": 2.0}, {"name": "A", "low": 0.5, "high": 1.5}]']
TINY = ["--task.kind", "regression", "--data.space", "vectors", *BOX, "--teacher.kind", "callable",
        "--data.shards", "2", "--data.samples_per_shard", "256", "--data.heldout_shards", "1",
        "--data.row_group_size", "64", "--label.batch_size", "16", "--label.actors", "1",
        "--student.width", "32", "--student.depth", "2", "--train.max_epochs", "4", "--train.batch_size", "32",
        "--train.loader_workers", "0", "--train.preflight", "false", "--eval.latency_seconds", "0.05"]


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    (root / "simulators.py").write_text(textwrap.dedent(SIMULATORS))
    return root


@pytest.fixture(scope="module")
def surrogate_run(code, tmp_path_factory):
    out = tmp_path_factory.mktemp("surrogate") / "run"
    proc = cli("run", "--out", str(out), "--code_dir", str(code), "--teacher.arch", "simulators:Flaky", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_report_holds_the_surrogate_contract(surrogate_run):
    out, proc = surrogate_run
    report = json.load(open(out / "report.json"))
    assert report["task"] == "regression"
    for split in ("train", "heldout"):
        r = report["regression"][split]
        quantiles = [r["rel_l2"][q] for q in ("median", "p95", "p99", "max")]
        assert quantiles == sorted(quantiles) and quantiles[0] > 0
        assert r["max_abs"] > 0 and len(r["r2"]) == 8
        assert r["samples"] + report["rejected_rows"][split] == (512 if split == "train" else 256)
    assert report["speedup"]["batch1024"] > 0 and report["params"]["student"] == 2 * 32 + 32 + 32 * 32 + 32 + 32 * 8 + 8
    card = json.load(open(out / "teacher" / "teacher.json"))
    assert card["version"] == "decay-1" and card["kind"] == "callable" and card["arch"] == "simulators:Flaky"
    assert "rel. L2 median" in proc.stdout
    student = json.load(open(out / "student" / "student.json"))
    assert student["kwargs"]["activation"] == "silu"  # the regression task's choice for smooth targets


def test_targets_are_float32_and_the_student_answers_in_physical_units(surrogate_run):
    """The exported file takes physical parameters and returns physical values, as the report's student does."""
    import onnxruntime as ort
    import pyarrow.parquet as pq

    out, _ = surrogate_run
    manifest = json.load(open(out / "shards" / "heldout" / "manifest.json"))
    table = pq.read_table(out / "shards" / "heldout" / manifest["shards"][0]["path"])
    assert table.schema.field("targets").metadata[b"distillery.dtype"] == b"<f4"
    x = np.frombuffer(b"".join(table.column("input").to_pylist()), np.float32).reshape(-1, 2)
    y = np.frombuffer(b"".join(table.column("targets").to_pylist()), np.float32).reshape(-1, 8)
    np.testing.assert_allclose(y, x[:, 1:2] * np.exp(-x[:, 0:1] * np.linspace(0, 1, 8)), rtol=1e-5)
    session = ort.InferenceSession(str(out / "student" / "student.onnx"), providers=["CPUExecutionProvider"])
    predicted = session.run(None, {session.get_inputs()[0].name: x})[0]
    errors = np.linalg.norm(predicted - y, axis=1) / np.linalg.norm(y, axis=1)
    report = json.load(open(out / "report.json"))
    assert np.median(errors) == pytest.approx(report["regression"]["heldout"]["rel_l2"]["median"], rel=1e-3)


def test_the_gate_reads_a_relative_error_quantile(surrogate_run, code, capsys):
    from pipeline.__main__ import main

    out, _ = surrogate_run
    status = main(["eval", str(out), "--code_dir", str(code), "--max-rel-error", "1e-9", "--eval.latency", "false"])
    assert status == 3 and "relative L2 error p95" in capsys.readouterr().err
    status = main(["eval", str(out), "--code_dir", str(code), "--max-rel-error", "10", "--eval.rel_error_quantile",
                   "max", "--eval.latency", "false"])
    assert status == 0, capsys.readouterr().err[-2000:]
    assert json.load(open(out / "report.json"))["gate"]["passed"] is True


def test_failed_batches_are_rejected_counted_and_reported(surrogate_run):
    out, proc = surrogate_run
    report = json.load(open(out / "report.json"))
    rejected = report["rejected_rows"]["train"]
    assert rejected > 0 and rejected % 16 == 0  # whole batches of label.batch_size
    assert report["regression"]["train"]["samples"] == 512 - rejected
    assert "FloatingPointError: the solver diverged" in report["first_errors"]["train"]
    assert "first teacher failure in train: FloatingPointError" in proc.stdout


@pytest.mark.parametrize("args, exit_code, expected", [
    (['--data.parameters', '[{"name": "k", "low": 2.0, "high": 2.0}]', "--teacher.arch", "simulators:Decay"], 2,
     "data.parameters k: low must be below high"),
    (["--teacher.arch", "simulators:broken"], 1, "RuntimeError: license server unreachable"),
    (["--teacher.arch", "simulators:flat"], 1, "returned shape [2] for 2 inputs"),
])
def test_bad_inputs_get_one_sentence(code, tmp_path, capsys, args, exit_code, expected):
    """The CLI's entry point in this process: each mistake stops before any shard is labeled."""
    from pipeline.__main__ import main

    status = main(["run", "--out", str(tmp_path / "out"), "--code_dir", str(code), *TINY, *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == exit_code and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert expected in lines[0]
    assert not (tmp_path / "out" / "shards").exists()


def test_adaptive_rounds_on_a_simulator_whose_actors_hold_every_core(code, tmp_path):
    """Two simulator actors hold both CPUs of the test Ray while they label; a round's scoring tasks need
    one, so the actors are let go after each round's labeling (held, the run would wait forever)."""
    out = tmp_path / "run"
    proc = cli("run", "--out", str(out), "--code_dir", str(code), "--teacher.arch", "simulators:Decay", *TINY,
               "--data.shards", "3", "--adapt.rounds", "1", "--label.actors", "2", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = json.load(open(out / "adapt" / "rounds.json"))["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[-1]["labels"] == 3 * 256
    manifest = json.load(open(out / "shards" / "train" / "manifest.json"))
    kinds = [s["provenance"]["kinds"] for s in manifest["shards"] if s.get("round")]
    assert kinds == [{"sobol-cloud": 256}]


CLASSIFICATION_KEYS = ("agreement", "accuracy", "classes", "calibration", "reliability", "per_class_agreement",
                       "confusion", "latency", "gallery", "min_agreement")


def test_a_regression_run_speaks_of_regression_only(surrogate_run):
    """report.json, report.md, report.html and the progress lines carry nothing of classification."""
    out, proc = surrogate_run
    report = json.load(open(out / "report.json"))
    assert not [k for k in CLASSIFICATION_KEYS if k in report], sorted(report)
    assert set(report["gate"]) == {"max_rel_error", "rel_error_quantile", "passed"}
    for page in ("report.md", "report.html"):
        text = (out / page).read_text()
        assert "Surrogate report" in text and "agreement" not in text.lower(), page
    progress = [line for line in proc.stderr.splitlines() if line.startswith("train")]
    assert progress and not any("agreement" in line for line in progress), progress
    assert any("train within tolerance" in line for line in proc.stderr.splitlines()), proc.stderr[-2000:]


def test_sweep_finds_the_smallest_surrogate_within_a_relative_error(surrogate_run, code, capsys):
    from pipeline.__main__ import main

    out, _ = surrogate_run
    report = json.load(open(out / "report.json"))
    bar = report["regression"]["heldout"]["rel_l2"]["p95"] * 4  # the run's own student (width 32) is within it
    status = main(["sweep", str(out), "--code_dir", str(code), "--max-rel-error", str(bar), "--sweep.widths",
                   "[4, 32]", "--eval.latency_seconds", "0.02"])
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]
    sweep = json.load(open(out / "sweep" / "sweep.json"))
    assert sweep["target"] == bar and sweep["quantile"] == "p95" and sweep["task"] == "regression"
    within = [t for t in sweep["trials"] if t["rel_l2"]["heldout"]["p95"] <= bar]
    assert sweep["smallest"]["name"] == min(within, key=lambda t: t["params"])["name"]
    assert f"smallest student within held-out relative L2 error p95 {bar:.3g}: {sweep['smallest']['name']}" in printed.out
    assert "agreement" not in printed.out
    redrawn = json.load(open(out / "report.json"))
    assert redrawn["sweep"]["smallest"]["name"] == sweep["smallest"]["name"] and "agreement" not in redrawn
