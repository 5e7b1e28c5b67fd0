"""The user's own teacher, student and data, each end to end through the CLI (labeling in Ray actors).

The test writes what a user brings into tmp_path: a module of their own (a teacher class in no
registry, a student factory, a plain numpy function), trained-looking weights with a card beside
them, the same network exported with torch.export and to ONNX, and an RGB 32x32 image folder of PNGs.
The runs call the CLI's entry point in this process on one shared Ray (labeling in Ray actors, other
processes all the same), which saves a Ray start and an import of everything per run;
tests/test_surrogate.py runs `python -m pipeline` in its own process with --code_dir shipped to
Ray's workers.
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

USER_MODULE = '''
import numpy as np
import torch
import torch.nn as nn


class TinyNet(nn.Module):
    """A teacher architecture of the user's own: in no registry of the project."""

    def __init__(self, dim=16, classes=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(dim * 16, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def build(dim=16, classes=4):
    return TinyNet(dim, classes)


def small_student(input_shape, num_outputs, hidden=24, width=None, depth=None):
    width = width or hidden
    layers = [nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width), nn.ReLU()]
    for _ in range((depth or 1) - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, num_outputs))


def brightness_rule(x):
    """A plain callable teacher on numpy batches: logits from each channel's mean brightness."""
    means = x.reshape(len(x), x.shape[1], -1).mean(axis=2)
    return np.concatenate([means, 1 - means.mean(axis=1, keepdims=True)], axis=1) * 8


def exploding(dim=16, classes=4):
    raise RuntimeError("this factory needs a GPU")
'''

CLASSES = ("red", "green", "blue", "gray")
TINY = ["--data.shards", "2", "--data.samples_per_shard", "128", "--data.heldout_shards", "1",
        "--data.row_group_size", "64", "--label.batch_size", "128", "--label.actors", "1",
        "--train.max_epochs", "2", "--train.batch_size", "32", "--train.loader_workers", "0",
        "--train.preflight", "false", "--eval.latency", "false"]


def write_image_folder(root, per_class: int = 6, size: int = 32) -> None:
    """root/<class>/*.png: RGB images whose colour tells the class, with noise and a random square."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200), "gray": (128, 128, 128)}
    for name in CLASSES:
        os.makedirs(root / name)
        for i in range(per_class):
            image = np.clip(np.array(colours[name]) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            y, x = rng.integers(0, size - 8, 2)
            image[y:y + 8, x:x + 8] = rng.integers(0, 255, 3)
            Image.fromarray(image, "RGB").save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def brought(tmp_path_factory):
    """The user's files: code, weights + card, the same network as .pt2 and .onnx, an image folder."""
    import sys

    root = tmp_path_factory.mktemp("user")
    code = root / "code"
    code.mkdir()
    (code / "user_models.py").write_text(textwrap.dedent(USER_MODULE))
    write_image_folder(root / "images")
    sys.path.insert(0, str(code))
    try:
        import user_models
    finally:
        sys.path.remove(str(code))
    torch.manual_seed(0)
    net = user_models.build(dim=16).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, root / "teacher.safetensors")
    (root / "teacher.json").write_text(json.dumps({"arch": "user_models:build", "kwargs": {"dim": 16}}))
    example = torch.rand(2, 3, 32, 32)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(root / "teacher.pt2"))
    torch.onnx.export(net, (example,), str(root / "teacher.onnx"), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}})
    torch.onnx.export(net, (torch.rand(2, 3, 28, 28),), str(root / "teacher28.onnx"), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}})
    return root


@pytest.fixture(scope="module")
def ray_with_user_code(brought):
    """One Ray for the in-process runs; its workers find the user's module on PYTHONPATH."""
    import ray

    if ray.is_initialized():  # the shared one, whose workers lack that PYTHONPATH
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(brought / "code")}})
    yield
    ray.shutdown()


def _run_here(capsys, out, *args):
    from pipeline.__main__ import main

    status = main(["run", "--out", str(out), *TINY, "--eval.batch_size", "64", *args])
    assert status == 0, capsys.readouterr().err[-3000:]
    return json.load(open(out / "report.json")), json.load(open(out / "teacher" / "teacher.json"))


def _train_logits(out) -> np.ndarray:
    manifest = json.load(open(out / "shards" / "train" / "manifest.json"))
    tables = [pq.read_table(out / "shards" / "train" / s["path"]) for s in manifest["shards"]]
    raw = b"".join(b"".join(t.column("logits").to_pylist()) for t in tables)
    return np.frombuffer(raw, np.float16).reshape(-1, manifest["num_classes"]).astype(np.float32)


@pytest.fixture(scope="module")
def torch_run(brought, ray_with_user_code, tmp_path_factory):
    """The user's own class by import path (code_dir), safetensors weights with a card beside them,
    and a student by import path."""
    from pipeline.__main__ import main

    out = tmp_path_factory.mktemp("byo") / "torch"
    assert main(["run", "--out", str(out), *TINY, "--teacher.dataset", str(brought / "images"), "--code_dir",
                 str(brought / "code"), "--teacher.checkpoint", str(brought / "teacher.safetensors"),
                 "--student.arch", "user_models:small_student", "--student.kwargs", '{"hidden": 20}']) == 0
    return out, json.load(open(out / "report.json")), json.load(open(out / "teacher" / "teacher.json"))


def test_own_teacher_class_and_student_by_import_path(torch_run):
    out, report, card = torch_run
    assert card["kind"] == "torch" and card["arch"] == "user_models:build" and card["kwargs"] == {"dim": 16}
    assert card["classes"] == sorted(CLASSES) and card["input_shape"] == [3, 32, 32]
    student = json.load(open(out / "student" / "student.json"))
    assert student["arch"] == "user_models:small_student" and student["kwargs"] == {"hidden": 20}
    assert report["params"]["student"] == 3 * 32 * 32 * 20 + 20 + 20 * 4 + 4
    for split in ("train", "heldout", "test"):
        assert 0 <= report["agreement"][split]["top1"] <= 1
    assert report["accuracy"]["teacher"] is not None  # the folder has labels: real test accuracy is reported
    assert len(_train_logits(out)) == 2 * 128


@pytest.mark.parametrize("suffix", ["pt2", "onnx"])
def test_the_same_network_exported_labels_the_same(brought, torch_run, ray_with_user_code, capsys, tmp_path, suffix):
    """torch.export and ONNX: no user code needed, and the labels match the module's own."""
    out = tmp_path / suffix
    report, card = _run_here(capsys, out, "--teacher.dataset", str(brought / "images"),
                             "--teacher.checkpoint", str(brought / f"teacher.{suffix}"))
    assert card["kind"] == {"pt2": "export", "onnx": "onnx"}[suffix]
    assert card["fingerprint"] != torch_run[2]["fingerprint"]
    assert card["params"] == torch_run[2]["params"]  # the same weights, counted from the program / the graph
    np.testing.assert_allclose(_train_logits(out), _train_logits(torch_run[0]), atol=2e-2, rtol=1e-2)
    assert 0 <= report["agreement"]["heldout"]["top1"] <= 1


def test_callable_teacher_on_unlabeled_npz(brought, ray_with_user_code, capsys, tmp_path):
    """A numpy function as the teacher, seed data without labels: agreement is reported, accuracy is not."""
    images = np.random.default_rng(1).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "seed.npz", images=images)
    out = tmp_path / "callable"
    report, card = _run_here(capsys, out, "--teacher.dataset", str(tmp_path / "seed.npz"), "--teacher.kind",
                             "callable", "--teacher.arch", "user_models:brightness_rule", "--code_dir",
                             str(brought / "code"))
    assert card["kind"] == "callable" and card["classes"] == ["0", "1", "2", "3"] and card["params"] is None
    assert report["accuracy"]["teacher"] is None and report["agreement"]["test"]["samples"] == 10
    assert not (out / "teacher" / "teacher.safetensors").exists()


@pytest.mark.parametrize("args, expected", [
    (["--teacher.arch", "no_such_module:build"], "module 'no_such_module' cannot be imported"),
    (["--teacher.arch", "user_models:nothing_here"], "has no attribute 'nothing_here'"),
    (["--teacher.arch", "user_models:exploding", "--teacher.checkpoint", "{root}/teacher_nocard.safetensors"],
     "raised RuntimeError"),
    (["--teacher.arch", "user_models:build", "--teacher.kwargs", '{"dim": 8}', "--teacher.checkpoint",
      "{root}/teacher_nocard.safetensors"], "does not match teacher 'user_models:build'"),
    (["--teacher.checkpoint", "{root}/teacher28.onnx"], "takes inputs of shape [3, 28, 28]"),
    (["--teacher.checkpoint", "{root}/teacher.pt", "--teacher.arch", "user_models:build"], "weights_only"),
    (["--student.arch", "user_models:nothing_here", "--teacher.checkpoint", "{root}/teacher.onnx"],
     "student.arch 'user_models:nothing_here': 'user_models' has no attribute 'nothing_here'"),
])
def test_wrong_inputs_get_one_sentence(brought, tmp_path, capsys, args, expected):
    """The CLI's entry point in this process (each case fails before Ray or training would start)."""
    import shutil

    from pipeline.__main__ import main

    shutil.copy(brought / "teacher.safetensors", brought / "teacher_nocard.safetensors")
    if not (brought / "teacher.pt").exists():  # a pickled object, not a state dict: refused, never run
        torch.save({"model": torch.nn.Linear(2, 2)}, brought / "teacher.pt")
    args = [a.replace("{root}", str(brought)) for a in args]
    code = main(["run", "--out", str(tmp_path / "out"), "--teacher.dataset", str(brought / "images"),
                 "--code_dir", str(brought / "code"), *TINY, *args])
    err = capsys.readouterr().err
    assert code == 1, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert expected in lines[0]
    assert not (tmp_path / "out" / "teacher").exists() and not (tmp_path / "out" / "shards").exists()
