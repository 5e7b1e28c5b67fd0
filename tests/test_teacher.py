import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.errors import UserError
from pipeline.teach.load import load_teacher
from pipeline.teach.stage import run_teacher_stage
from pipeline.run.rundir import RunPaths
from teachers import TEACHERS, TeacherCard, compute_fingerprint, weights_to_bytes
from tests.conftest import tiny_config


def teacher_file(paths, card):
    """The run's teacher weights: DIR/teacher/<card.file_name>."""
    return os.path.join(paths.teacher_dir, card.file_name)


def test_trained_teacher_is_saved_with_a_card_and_fingerprint(tmp_path):
    cfg = tiny_config(tmp_path / "out")
    result = run_teacher_stage(cfg)
    paths = RunPaths(cfg.out)
    card = json.loads(open(paths.teacher_card).read())
    assert result.action == "trained"
    saved = TeacherCard.from_dict(card)
    assert saved.kind == "torch" and saved.file_name == "teacher.safetensors"
    assert card["fingerprint"] == compute_fingerprint(saved, open(teacher_file(paths, saved), "rb").read())
    assert card["input_shape"] == [1, 8, 8] and len(card["classes"]) == 10
    assert 0.0 <= card["test_accuracy"] <= 1.0
    # A rerun reuses the teacher rather than training another.
    assert run_teacher_stage(cfg).action == "reused"
    model, _ = load_teacher(paths)
    assert model(np.random.rand(2, 1, 8, 8).astype(np.float32)).shape == (2, 10)
    assert model.module(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_the_same_config_trains_the_same_teacher(tmp_path):
    """From its initial weights on: nothing depends on what used the global RNG before."""
    fingerprints = []
    for name, noise in (("a", 1), ("b", 2)):
        torch.manual_seed(noise)
        fingerprints.append(run_teacher_stage(tiny_config(tmp_path / name)).card.fingerprint)
    assert fingerprints[0] == fingerprints[1]


def test_a_user_checkpoint_is_imported_not_trained(tmp_path):
    model = TEACHERS.build("cnn", input_shape=(1, 8, 8), num_outputs=10, width=8)
    checkpoint = tmp_path / "mine.safetensors"
    checkpoint.write_bytes(weights_to_bytes(model))
    cfg = tiny_config(tmp_path / "out", teacher={"checkpoint": str(checkpoint), "width": 8})
    result = run_teacher_stage(cfg)
    assert result.action == "imported"
    assert result.card.fingerprint == compute_fingerprint(result.card, checkpoint.read_bytes())


def test_a_checkpoint_that_does_not_match_its_architecture_is_refused(tmp_path):
    model = TEACHERS.build("cnn", input_shape=(1, 8, 8), num_outputs=10, width=16)
    checkpoint = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    cfg = tiny_config(tmp_path / "out", teacher={"checkpoint": str(checkpoint), "width": 8})
    with pytest.raises(UserError, match=r"does not match teacher 'cnn' with \{'width': 8\}.*has shape"):
        run_teacher_stage(cfg)
    assert not (tmp_path / "out" / "teacher").exists()


def test_a_missing_checkpoint_is_named(tmp_path):
    cfg = tiny_config(tmp_path / "out", teacher={"checkpoint": str(tmp_path / "nope.safetensors")})
    with pytest.raises(UserError, match="nope.safetensors does not exist"):
        run_teacher_stage(cfg)


def test_weights_changed_after_saving_are_detected(tmp_path):
    cfg = tiny_config(tmp_path / "out")
    run_teacher_stage(cfg)
    paths = RunPaths(cfg.out)
    weights = teacher_file(paths, TeacherCard.from_dict(json.loads(open(paths.teacher_card).read())))
    data = bytearray(open(weights, "rb").read())
    data[-1] ^= 1
    open(weights, "wb").write(bytes(data))
    with pytest.raises(UserError, match="does not match the fingerprint"):
        load_teacher(paths)
