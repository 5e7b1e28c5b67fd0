"""The teacher's inputs taken at their word: a test split's classes matched with the training data's
by name, and a card's arch built with the kwargs written for it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.inputs.seeds import load_seed_dataset

SHADES = {"a": 30, "b": 120, "c": 210}  # a class's pixel value, so an image tells its class


def write_folder(root, names, per_class: int = 3) -> None:
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((6, 6), SHADES.get(name, 0), np.uint8)).save(root / name / f"{i}.png")


def test_test_folder_with_fewer_classes_in_another_order_is_labeled_by_name(tmp_path):
    write_folder(tmp_path / "train", ["a", "b", "c"])
    write_folder(tmp_path / "test", ["c", "a"])  # sorted a, c: by position c would be b
    seed = load_seed_dataset(str(tmp_path / "train"), test_data=str(tmp_path / "test"))
    assert seed.classes == ["a", "b", "c"]
    shade_of = {i: SHADES[name] for i, name in enumerate(seed.classes)}
    assert sorted(seed.test_labels.tolist()) == [0, 0, 0, 2, 2, 2]
    assert all(int(image.max()) == shade_of[int(label)] for image, label in zip(seed.test_images, seed.test_labels))


def test_test_npz_naming_its_classes_in_another_order_is_labeled_by_name(tmp_path):
    write_folder(tmp_path / "train", ["a", "b", "c"])
    images = np.stack([np.full((6, 6), SHADES[n], np.uint8) for n in ("c", "b", "c")])
    np.savez(tmp_path / "test.npz", images=images, labels=np.array([0, 1, 0]), classes=np.array(["c", "b"]))
    seed = load_seed_dataset(str(tmp_path / "train"), test_data=str(tmp_path / "test.npz"))
    assert seed.test_labels.tolist() == [2, 1, 2]


def test_unknown_test_class_is_one_sentence_naming_it_and_its_folder(tmp_path):
    write_folder(tmp_path / "train", ["a", "b", "c"])
    write_folder(tmp_path / "test", ["a", "z"])
    with pytest.raises(ValueError) as caught:
        load_seed_dataset(str(tmp_path / "train"), test_data=str(tmp_path / "test"))
    message = str(caught.value)
    assert "'z'" in message and str(tmp_path / "test" / "z") in message and "\n" not in message


def test_unknown_test_class_exits_1_with_one_line_through_the_cli(tmp_path, capsys):
    from pipeline.__main__ import main

    write_folder(tmp_path / "train", ["a", "b", "c"])
    write_folder(tmp_path / "test", ["a", "z"])
    status = main(["teacher", "--out", str(tmp_path / "out"), "--teacher.dataset", str(tmp_path / "train"),
                   "--teacher.test_data", str(tmp_path / "test"), "--teacher.epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and "'z'" in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_bare_integer_test_labels_beyond_the_classes_are_refused(tmp_path):
    write_folder(tmp_path / "train", ["a", "b", "c"])
    np.savez(tmp_path / "test.npz", images=np.zeros((2, 6, 6), np.uint8), labels=np.array([0, 3]))
    with pytest.raises(ValueError, match="test.npz.*3"):
        load_seed_dataset(str(tmp_path / "train"), test_data=str(tmp_path / "test.npz"))


USER_MODULE = '''
import torch.nn as nn


def build(dim=4):
    """The user's own digits classifier: 8x8 grayscale in, 10 logits out; it takes no width."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, dim), nn.ReLU(), nn.Linear(dim, 10))
'''
TINY_YAML = "pipeline/configs/tiny.yaml"  # a teacher width for the built-in cnn


def save_weights(root, **kwargs) -> None:
    """teacher.safetensors from the user's factory built with `kwargs` (loaded from its file, not imported)."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("defect_models_here", root / "code" / "defect_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in module.build(**kwargs).state_dict().items()}, root / "teacher.safetensors")


@pytest.fixture()
def user_teacher(tmp_path):
    """The user's code and weights built with dim=6 (no card yet)."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "defect_models.py").write_text(USER_MODULE)
    save_weights(tmp_path, dim=6)
    return tmp_path


def _teacher_stage(tmp_path, capsys, *args):
    from pipeline.__main__ import main

    status = main(["teacher", "--config", TINY_YAML, "--out", str(tmp_path / "out"), "--code_dir",
                   str(tmp_path / "code"), "--teacher.checkpoint", str(tmp_path / "teacher.safetensors"), *args])
    return status, capsys.readouterr().err.strip()


def test_card_arch_and_kwargs_win_and_the_log_says_so(user_teacher, capsys):
    (user_teacher / "teacher.json").write_text(json.dumps({"arch": "defect_models:build", "kwargs": {"dim": 6}}))
    status, err = _teacher_stage(user_teacher, capsys)
    assert status == 0, err
    card = json.load(open(user_teacher / "out" / "teacher" / "teacher.json"))
    assert card["arch"] == "defect_models:build" and card["kwargs"] == {"dim": 6}
    assert "teacher: arch and kwargs from the card beside" in err and "teacher.safetensors" in err


@pytest.mark.parametrize("args", [[], ["--teacher.kwargs", '{"width": 8}']])
def test_card_arch_without_kwargs_gets_none_of_the_config_s(user_teacher, capsys, args):
    """The card names only the arch: the factory's own defaults, not the width or kwargs the config
    holds for the built-in cnn."""
    save_weights(user_teacher)
    (user_teacher / "teacher.json").write_text(json.dumps({"arch": "defect_models:build"}))
    status, err = _teacher_stage(user_teacher, capsys, *args)
    assert status == 0, err
    assert json.load(open(user_teacher / "out" / "teacher" / "teacher.json"))["kwargs"] == {}


def test_config_naming_the_card_s_arch_with_other_kwargs_is_one_sentence(user_teacher, capsys):
    (user_teacher / "teacher.json").write_text(json.dumps({"arch": "defect_models:build", "kwargs": {"dim": 6}}))
    status, err = _teacher_stage(user_teacher, capsys, "--teacher.arch", "defect_models:build",
                                 "--teacher.kwargs", '{"dim": 12}')
    assert status == 1 and "teacher.kwargs" in err and "teacher.json" in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err


def test_config_naming_the_card_s_arch_with_the_same_kwargs_is_fine(user_teacher, capsys):
    (user_teacher / "teacher.json").write_text(json.dumps({"arch": "defect_models:build", "kwargs": {"dim": 6}}))
    status, err = _teacher_stage(user_teacher, capsys, "--teacher.arch", "defect_models:build",
                                 "--teacher.kwargs", '{"dim": 6}')
    assert status == 0, err
