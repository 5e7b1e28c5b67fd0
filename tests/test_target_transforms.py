"""Target transforms of a regression: chosen from the training targets, recorded with the student,
and invisible from outside (the student and its ONNX file still answer in physical units)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from pipeline.tasks.target_transforms import choose, choose_per_channel
from students.scale import OutputScale
from tests.conftest import cli


def _curves(scales: np.ndarray, signed: bool = False) -> np.ndarray:
    t = np.linspace(0, 1, 16)
    y = scales[:, None] * np.exp(-3 * t)[None, :]
    return y * np.where(np.arange(16) % 2, -1, 1) if signed else y


def test_auto_chooses_from_how_far_the_samples_scales_spread():
    rng = np.random.default_rng(0)
    narrow = _curves(rng.uniform(0.5, 1.5, 4000))
    wide = _curves(10 ** rng.uniform(-3, 2, 4000))
    assert choose("auto", narrow).name == "none"
    log = choose("auto", wide)
    assert log.name == "log" and 0 < log.value < 1e-5 and "decades" in log.reason
    assert choose("auto", _curves(10 ** rng.uniform(-3, 2, 4000), signed=True)).name == "asinh"
    assert choose("none", wide).name == "none" and choose("log", narrow).name == "log"
    with pytest.raises(ValueError, match="task.target_transform log needs targets >= 0"):
        choose("log", -wide)


@pytest.mark.parametrize("name, value", [("none", 1.0), ("log", 1e-6), ("asinh", 1e-3)])
def test_the_output_scale_inverts_its_transform(name, value):
    y = torch.from_numpy(_curves(10 ** np.linspace(-3, 2, 50), signed=name == "asinh")).float()
    t = torch.tensor([0.0] * 16), torch.tensor([1.0] * 16)
    scale = OutputScale(t[0].tolist(), t[1].tolist(), name, value)
    back = scale(scale.standardise(y))
    assert torch.allclose(back, y, rtol=1e-4, atol=value * 1e-3)


def _two_channels(rows: int = 3000) -> np.ndarray:
    """[rows, 2 * 16]: channel 0 a positive decay whose scale spans five decades, channel 1 values of
    order one crossing zero (a pressure beside a velocity)."""
    rng = np.random.default_rng(1)
    pressure = _curves(10 ** rng.uniform(-3, 2, rows))
    velocity = np.sin(np.linspace(0, 6, 16))[None, :] * rng.uniform(0.5, 1.5, (rows, 1))
    return np.concatenate([pressure, velocity], axis=1)


def test_each_output_channel_of_a_field_chooses_its_own_transform():
    y = _two_channels()
    chosen = choose_per_channel("auto", y, channels=2)
    assert [c.name for c in chosen] == ["log", "none"]
    assert chosen[0].reason.startswith("channel 0:") and chosen[1].reason.startswith("channel 1:")
    # One channel (every vector target) is the plain choice over all outputs.
    assert choose_per_channel("auto", y, channels=1) == [choose("auto", y)]
    # A forced log names the channel that cannot take it.
    with pytest.raises(ValueError, match="output channel 1: task.target_transform log needs targets >= 0"):
        choose_per_channel("log", y, channels=2)


def test_per_channel_transforms_invert_and_keep_gradients_finite():
    y = torch.from_numpy(_two_channels(200)).float()
    scale = OutputScale([0.0] * 32, [1.0] * 32, ["log", "none"], [1e-6, 1.0])
    assert scale.per_channel is not None and scale.transforms == [("log", 1e-6), ("none", 1.0)]
    assert torch.allclose(scale(scale.standardise(y)), y, rtol=1e-4, atol=1e-9)
    # Channel 1 passes through untouched; channel 0 is log(y + floor).
    t = scale.forward_values(y)
    assert torch.equal(t[:, 16:], y[:, 16:]) and torch.allclose(t[:, :16], torch.log(y[:, :16] + 1e-6))
    # Raw outputs of 1,000 in the untransformed channel would overflow exp(); its branch never sees them.
    out = torch.cat([torch.zeros(4, 16), torch.full((4, 16), 1000.0)], dim=1).requires_grad_()
    scale(out).sum().backward()
    assert torch.isfinite(out.grad).all() and torch.equal(out.grad[:, 16:], torch.ones(4, 16))
    # The same transform for every channel keeps the plain path.
    assert OutputScale([0.0] * 32, [1.0] * 32, ["log", "log"], [1e-6, 1e-6]).per_channel is None


def test_a_per_channel_record_rebuilds_the_same_student_and_exports_to_onnx():
    import onnxruntime as ort

    from pipeline.train.export import onnx_bytes
    from pipeline.train.student import describe_scale, transform_record

    scale = OutputScale([0.5] * 32, [2.0] * 32, ["log", "asinh"], [1e-6, 1e-2])
    scale.reason, scale.reasons = "both", ["channel 0: wide", "channel 1: signed"]
    record = transform_record(scale)
    assert record["name"] == "per channel" and [c["name"] for c in record["channels"]] == ["log", "asinh"]
    assert "log, floor 1e-06 (channel 0: wide); asinh, linear within ±0.01" in describe_scale(scale)
    rebuilt = OutputScale([0.5] * 32, [2.0] * 32, [c["name"] for c in record["channels"]],
                          [c["value"] for c in record["channels"]])
    z = torch.randn(8, 32)
    assert torch.equal(rebuilt(z), scale(z))
    model = torch.nn.Sequential(torch.nn.Linear(3, 32), rebuilt).eval()
    session = ort.InferenceSession(onnx_bytes(model, (3,)))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        assert np.allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


SIMULATOR = '''
import numpy as np

TIMES = np.linspace(0.0, 1.0, 12)


class Decay:
    """dose * exp(-k t): the dose spans five decades, so raw values of one sample dwarf another's."""

    version = "decay-decades-1"

    def __call__(self, x):
        k, dose = x[:, 0:1], x[:, 1:2]
        return dose * np.exp(-k * TIMES)
'''


def test_a_run_over_decades_chooses_log_says_so_and_answers_in_physical_units(tmp_path):
    import onnxruntime as ort
    import pyarrow.parquet as pq

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "decay_sim.py").write_text(textwrap.dedent(SIMULATOR))
    out = tmp_path / "run"
    box = '[{"name": "k", "low": 0.1, "high": 3.0}, {"name": "dose", "low": 0.001, "high": 100.0, "log": true}]'
    proc = cli("run", "--out", str(out), "--code_dir", str(tmp_path / "code"), "--task.kind", "regression",
               "--data.space", "vectors", "--data.parameters", box, "--teacher.kind", "callable",
               "--teacher.arch", "decay_sim:Decay", "--data.shards", "2", "--data.samples_per_shard", "512",
               "--data.heldout_shards", "1", "--data.row_group_size", "128", "--label.actors", "1",
               "--student.width", "32", "--student.depth", "2", "--train.max_epochs", "20", "--train.batch_size", "64",
               "--train.loader_workers", "0", "--train.preflight", "false", "--eval.latency", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "target transform log, floor" in proc.stderr and "chosen: the targets are >= 0" in proc.stderr
    card = json.load(open(out / "student" / "student.json"))
    assert card["target_transform"]["name"] == "log" and card["target_transform"]["value"] > 0
    report = json.load(open(out / "report.json"))
    assert report["regression"]["target_transform"]["name"] == "log"
    assert "targets: transform log" in (out / "report.md").read_text()
    # The ONNX file takes physical parameters and returns physical values, as the report measures them.
    manifest = json.load(open(out / "shards" / "heldout" / "manifest.json"))
    table = pq.read_table(out / "shards" / "heldout" / manifest["shards"][0]["path"])
    x = np.frombuffer(b"".join(table.column("input").to_pylist()), np.float32).reshape(-1, 2)
    y = np.frombuffer(b"".join(table.column("targets").to_pylist()), np.float32).reshape(-1, 12)
    session = ort.InferenceSession(str(out / "student" / "student.onnx"), providers=["CPUExecutionProvider"])
    predicted = session.run(None, {session.get_inputs()[0].name: x})[0]
    errors = np.linalg.norm(predicted - y, axis=1) / np.linalg.norm(y, axis=1)
    assert np.median(errors) == pytest.approx(report["regression"]["heldout"]["rel_l2"]["median"], rel=1e-3)
    assert report["regression"]["heldout"]["rel_l2"]["p95"] < 0.2  # in log space every dose is learned alike
