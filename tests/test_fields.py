"""Fields in, fields out: a cheap exact solver (the heat equation, solved in Fourier space) through
the CLI on 1-D and 2-D grids, the report's field figures, the user's own arrays, and each mistake."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from tests.conftest import cli

SOLVERS = '''
import numpy as np


class Heat:
    """u(., T) of u_t = nu u_xx on the periodic unit interval or square, exactly (per Fourier mode)."""

    version = "heat-1"

    def __init__(self, nu=0.002, t_end=1.0):
        self.nu, self.t_end = nu, t_end

    def __call__(self, x):
        axes = tuple(range(2, x.ndim))
        k2 = sum(np.meshgrid(*[(2 * np.pi * np.fft.fftfreq(x.shape[a], 1 / x.shape[a])) ** 2 for a in axes],
                             indexing="ij"))
        return np.real(np.fft.ifftn(np.fft.fftn(x, axes=axes) * np.exp(-self.nu * k2 * self.t_end), axes=axes))


class Squares(Heat):
    """Two output channels from one input: the heated field and its square."""

    def __call__(self, x):
        u = super().__call__(x)
        return np.concatenate([u, u * u], axis=1)


def diverges(x):
    raise FloatingPointError("the solver diverged")
'''

FIELD = '[{"length_scale": 0.2, "amplitude": 1.0, "mean": 0.5, "periodic": true}]'
TINY = ["--task.kind", "regression", "--data.space", "fields", "--data.fields.channels", FIELD,
        "--teacher.kind", "callable", "--data.shards", "2", "--data.samples_per_shard", "128",
        "--data.heldout_shards", "1", "--data.row_group_size", "64", "--label.batch_size", "32",
        "--label.actors", "1", "--student.width", "8", "--student.depth", "2", "--train.max_epochs", "3",
        "--train.batch_size", "16", "--train.loader_workers", "0", "--train.preflight", "false",
        "--eval.latency_seconds", "0.05"]


def label(out, *args):
    """The teacher and label stages alone: the shards, without training. The teacher stage (which only
    probes the solver, without Ray) in this process; labeling, whose Ray workers need the code_dir
    shipped to them, through the CLI."""
    from pipeline.__main__ import main

    assert main(["teacher", "--out", str(out), *args]) == 0
    return cli("label", "--out", str(out), *args)


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    root = tmp_path_factory.mktemp("solvers")
    (root / "solvers.py").write_text(textwrap.dedent(SOLVERS))
    return root


@pytest.fixture(scope="module")
def run_1d(code, tmp_path_factory):
    out = tmp_path_factory.mktemp("fields") / "run"
    # One active round too: its proposals are the worst fields, perturbed.
    proc = cli("run", "--out", str(out), "--code_dir", str(code), "--teacher.arch", "solvers:Heat",
               "--data.fields.grid", "[32]", *TINY, "--data.shards", "3", "--adapt.rounds", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_a_1d_field_run_reports_field_figures(run_1d):
    out, proc = run_1d
    report = json.load(open(out / "report.json"))
    held = report["regression"]["heldout"]
    assert held["samples"] == 128 and held["field_shape"] == [1, 32]
    assert len(held["rmse_by_position"][0]) == 32 and all(v > 0 for v in held["rmse_by_position"][0])
    assert held["vrmse"][0]["channel"] == 0 and held["vrmse"][0]["median"] > 0
    fields = report["regression"]["details"]["fields"]
    worst = fields["worst"]
    assert len(worst) == 4 and worst[0]["error"] >= worst[-1]["error"]
    assert np.asarray(worst[0]["input"]).shape == (1, 32) and np.asarray(worst[0]["student"]).shape == (1, 32)
    assert len(fields["spectrum"]["error"]) == 17  # rfft of 32 points
    for name in ("worst_fields", "spectrum", "error_by_position"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert "VRMSE per output channel" in proc.stdout + proc.stderr
    assert report["speedup"]["batch256"] > 0


def test_the_student_is_a_neural_operator_with_the_targets_shape(run_1d):
    out, proc = run_1d
    card = json.load(open(out / "student" / "student.json"))
    assert card["arch"] == "fno" and card["kwargs"]["output_shape"] == [1, 32]
    assert "field defaults" in proc.stderr + proc.stdout  # what was chosen is said
    teacher = json.load(open(out / "teacher" / "teacher.json"))
    assert teacher["output_shape"] == [1, 32]
    manifest = json.load(open(out / "shards" / "train" / "manifest.json"))
    assert manifest["target_shape"] == [1, 32] and manifest["input_shape"] == [1, 32]


def test_the_student_copies_the_solver_on_stored_inputs(run_1d):
    """Rebuild the student from its files and run it on the held-out inputs: its output matches what
    the report says (the solver's values within the reported errors)."""
    import torch

    from pipeline import shards
    from pipeline.inputs import space
    from pipeline.run.rundir import RunPaths
    from pipeline.train.student import load_student_dir

    out, _ = run_1d
    split = RunPaths(str(out)).split("heldout")
    manifest = shards.require_manifest(split)
    rows = shards.read_split(split, manifest, ("input", "targets"))
    student, card, _ = load_student_dir(str(out / "student"))
    decode = space.decode_module(card.input_space, card.input_shape, card.parameters)
    with torch.inference_mode():
        pred = student(decode(rows["input"]))
    y = rows["targets"].double()
    errors = ((pred.double() - y).norm(dim=1) / y.norm(dim=1)).numpy()
    report = json.load(open(out / "report.json"))
    assert np.median(errors) == pytest.approx(report["regression"]["heldout"]["rel_l2"]["median"], rel=1e-3)


def test_an_active_round_proposes_perturbed_worst_fields(run_1d):
    out, _ = run_1d
    rounds = json.load(open(out / "adapt" / "rounds.json"))["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[-1]["labels"] == 3 * 128
    manifest = json.load(open(out / "shards" / "train" / "manifest.json"))
    kinds = [s["provenance"]["kinds"] for s in manifest["shards"] if s.get("round")]
    assert kinds == [{"field-perturbation": 128}]


def test_sweep_and_promotion_work_on_fields(run_1d, code, tmp_path, capsys):
    from pipeline.__main__ import main

    out, _ = run_1d
    report = json.load(open(out / "report.json"))
    bar = report["regression"]["heldout"]["rel_l2"]["p95"] * 4  # the run's own student (width 8) is within it
    status = main(["sweep", str(out), "--code_dir", str(code), "--max-rel-error", str(bar), "--sweep.widths", "[4, 8]",
                   "--eval.latency_seconds", "0.02"])
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]
    sweep = json.load(open(out / "sweep" / "sweep.json"))
    assert [t["arch"] for t in sweep["trials"]] == ["fno", "fno"] and sweep["smallest"] is not None
    registry = tmp_path / "registry"
    assert main(["promote", str(out), "--registry", str(registry), "--max-rel-error", str(bar)]) == 0
    assert (registry / "current").read_text().strip() == "v0001"
    # The same student against a bar it cannot meet: the gate refuses it (exit 3), nothing moves.
    assert main(["promote", str(out), "--registry", str(tmp_path / "other"), "--max-rel-error", "1e-9"]) == 3
    assert not (tmp_path / "other" / "current").exists()


def test_a_2d_run_with_two_output_channels(code, tmp_path):
    out = tmp_path / "run"
    proc = cli("run", "--out", str(out), "--code_dir", str(code), "--teacher.arch", "solvers:Squares",
               "--data.fields.grid", "[12, 16]", "--student.arch", "unet", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(out / "report.json"))
    held = report["regression"]["heldout"]
    assert held["field_shape"] == [2, 12, 16] and len(held["vrmse"]) == 2
    assert np.asarray(held["rmse_by_position"]).shape == (2, 12, 16)
    assert (out / "plots" / "worst_fields.png").exists()


def test_the_users_own_arrays_are_perturbed_and_stored_as_float16(code, tmp_path):
    from pipeline import shards

    base = np.stack([np.sin(2 * np.pi * k * np.arange(32) / 32) for k in (1, 2, 3)]).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    out = tmp_path / "run"
    channel = '[{"length_scale": 0.2, "amplitude": 0.01, "periodic": true}]'
    proc = label(out, "--code_dir", str(code), "--teacher.arch", "solvers:Heat",
                 "--data.fields.grid", "[32]", *TINY, "--data.fields.channels", channel,
                 "--data.fields.base", str(tmp_path / "base.npy"), "--data.fields.dtype", "float16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    split = str(out / "shards" / "train")
    manifest = shards.require_manifest(split)
    stored = shards.read_split(split, manifest, ("input",))["input"]
    assert str(stored.dtype) == "torch.float16" and stored.shape == (256, 32)  # 2 bytes a value, not 4
    x = stored.float().numpy()
    nearest = np.abs(x[:, None, :] - base[None]).max(axis=2).min(axis=1)
    assert nearest.max() < 0.1 and nearest.min() > 0  # every input near one of the arrays, none equal to it
    assert len({int(np.argmin(np.abs(row - base).max(axis=1))) for row in x}) == 3  # all three arrays used


@pytest.mark.parametrize("args, message", [
    (["--data.fields.grid", "[2]"], "data.fields.grid must be [N] or [H, W] with at least 4 points"),
    (["--data.fields.grid", "[8, 8, 8]"], "data.fields.grid must be [N] or [H, W]"),
    (["--data.fields.grid", "[32]", "--data.fields.channels", '[{"length_scale": -1}]'], "length_scale"),
    (["--data.fields.grid", "[32]", "--data.fields.base", "{root}/missing.npy"], "missing.npy"),
    (["--data.fields.grid", "[32]", "--data.fields.base", "{root}/two.npy"], "2 channels"),
])
def test_field_config_mistakes_are_one_sentence(tmp_path, capsys, args, message):
    """Refused while the command line is read (in this process: nothing runs before the check)."""
    from pipeline.__main__ import main

    np.save(tmp_path / "two.npy", np.zeros((3, 2, 32), np.float32))
    args = [a.replace("{root}", str(tmp_path)) for a in args]
    code = main(["run", "--out", str(tmp_path / "run"), "--teacher.arch", "solvers:Heat", *TINY, *args])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "shards").exists()


def test_a_solver_that_raises_is_one_sentence(code, tmp_path):
    proc = cli("run", "--out", str(tmp_path / "run"), "--code_dir", str(code), "--teacher.arch", "solvers:diverges",
               "--data.fields.grid", "[32]", *TINY)
    assert proc.returncode == 1
    assert "FloatingPointError: the solver diverged" in proc.stderr and "Traceback" not in proc.stderr
