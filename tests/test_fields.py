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
    """The teacher and label stages alone: the shards, without training."""
    for stage in ("teacher", "label"):
        proc = cli(stage, "--out", str(out), *args)
        if proc.returncode:
            return proc
    return proc


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    root = tmp_path_factory.mktemp("solvers")
    (root / "solvers.py").write_text(textwrap.dedent(SOLVERS))
    return root


@pytest.fixture(scope="module")
def run_1d(code, tmp_path_factory):
    out = tmp_path_factory.mktemp("fields") / "run"
    proc = cli("run", "--out", str(out), "--code_dir", str(code), "--teacher.arch", "solvers:Heat",
               "--data.fields.grid", "[32]", *TINY)
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


def test_float16_storage_halves_the_input_bytes(code, tmp_path):
    from pipeline import shards

    sizes = {}
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype
        proc = label(out, "--code_dir", str(code), "--teacher.arch", "solvers:Heat",
                     "--data.fields.grid", "[64]", "--data.fields.dtype", dtype, *TINY)
        assert proc.returncode == 0, proc.stderr[-3000:]
        manifest = shards.require_manifest(str(out / "shards" / "train"))
        rows = shards.read_split(str(out / "shards" / "train"), manifest, ("input",))
        assert rows["input"].dtype == getattr(__import__("torch"), dtype)
        sizes[dtype] = rows["input"].numel() * rows["input"].element_size()
    assert sizes["float16"] * 2 == sizes["float32"]


def test_the_users_own_arrays_are_perturbed(code, tmp_path):
    base = np.stack([np.sin(2 * np.pi * k * np.arange(32) / 32) for k in (1, 2, 3)]).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    out = tmp_path / "run"
    channel = '[{"length_scale": 0.2, "amplitude": 0.01, "periodic": true}]'
    proc = label(out, "--code_dir", str(code), "--teacher.arch", "solvers:Heat",
                 "--data.fields.grid", "[32]", *TINY, "--data.fields.channels", channel,
                 "--data.fields.base", str(tmp_path / "base.npy"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    from pipeline import shards

    manifest = shards.require_manifest(str(out / "shards" / "train"))
    x = shards.read_split(str(out / "shards" / "train"), manifest, ("input",))["input"].numpy()
    nearest = np.abs(x[:, None, :] - base[None]).max(axis=2).min(axis=1)
    assert nearest.max() < 0.1 and nearest.min() > 0  # every input near one of the arrays, none equal to it


@pytest.mark.parametrize("args, message", [
    (["--data.fields.grid", "[2]"], "data.fields.grid must be [N] or [H, W] with at least 4 points"),
    (["--data.fields.grid", "[8, 8, 8]"], "data.fields.grid must be [N] or [H, W]"),
    (["--data.fields.grid", "[32]", "--data.fields.channels", '[{"length_scale": -1}]'], "length_scale"),
    (["--data.fields.grid", "[32]", "--data.fields.base", "{root}/missing.npy"], "missing.npy"),
    (["--data.fields.grid", "[32]", "--data.fields.base", "{root}/two.npy"], "2 channels"),
])
def test_field_config_mistakes_are_one_sentence(code, tmp_path, args, message):
    np.save(tmp_path / "two.npy", np.zeros((3, 2, 32), np.float32))
    args = [a.replace("{root}", str(tmp_path)) for a in args]
    proc = cli("run", "--out", str(tmp_path / "run"), "--code_dir", str(code), "--teacher.arch", "solvers:Heat",
               *TINY, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "shards").exists()


def test_a_solver_that_raises_is_one_sentence(code, tmp_path):
    proc = cli("run", "--out", str(tmp_path / "run"), "--code_dir", str(code), "--teacher.arch", "solvers:diverges",
               "--data.fields.grid", "[32]", *TINY)
    assert proc.returncode == 1
    assert "FloatingPointError: the solver diverged" in proc.stderr and "Traceback" not in proc.stderr
