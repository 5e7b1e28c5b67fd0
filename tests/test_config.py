import glob
import os

import pytest

from pipeline.__main__ import main, parse
from pipeline.adapt.loop import round_epochs
from pipeline.kinds import check_kinds
from pipeline.config import Config, TrainConfig, fingerprint, result_fields
from pipeline.errors import EXIT_CONFIG_ERROR, ConfigError

SHIPPED = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "pipeline", "configs", "*.yaml")))


def test_defaults_parse_to_the_embedded_demo():
    stage, cfg = parse(["run"])
    assert stage == "run"
    assert cfg == check_kinds(Config())
    assert (cfg.student.width, cfg.student.depth, cfg.train.lr, cfg.train.max_epochs) == (112, 3, 1e-2, 60)


def test_a_regression_leaves_its_student_and_schedule_to_the_task_and_says_why(caplog):
    import logging

    box = '[{"name": "a", "low": 0, "high": 1}, {"name": "b", "low": 1, "high": 2}]'
    common = ["run", "--task.kind", "regression", "--data.space", "vectors", "--data.parameters", box,
              "--teacher.kind", "callable", "--teacher.arch", "m:f", "--data.samples_per_shard", "1024"]
    with caplog.at_level(logging.INFO, logger="pipeline.kinds"):
        _, small = parse([*common, "--data.shards", "4"])
    assert "regression defaults for 2 parameters and 4,096 labels" in caplog.text
    _, large = parse([*common, "--data.shards", "64"])
    assert (small.student.width, small.student.depth, small.train.lr) == (160, 4, 2e-3)
    assert small.train.max_epochs > large.train.max_epochs >= 150  # fewer labels: more passes over them
    _, given = parse([*common, "--data.shards", "4", "--student.width", "64", "--train.max_epochs", "7"])
    assert (given.student.width, given.student.depth, given.train.max_epochs) == (64, 4, 7)


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_every_shipped_config_parses(path, tmp_path):
    _, cfg = parse(["run", "--config", path, "--out", str(tmp_path)])
    assert isinstance(cfg, Config)
    assert cfg.out == str(tmp_path)


def test_overrides_reach_nested_fields():
    _, cfg = parse(["train", "--out", "/nonexistent/run", "--train.max_epochs", "7", "--student.width", "64",
                    "--devices", "2"])
    assert (cfg.train.max_epochs, cfg.student.width, cfg.train.devices) == (7, 64, 2)


def test_eval_takes_the_directory_and_gate_positionally():
    _, cfg = parse(["eval", "/some/run", "--min-agreement", "0.99"])
    assert cfg.out == "/some/run"
    assert cfg.eval.min_agreement == 0.99


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "--train.epochz", "3"], "train.epochz"),
        (["run", "--train.max_epochs", "many"], "train.max_epochs"),
        (["run", "--train.temperature", "0"], "train.temperature"),
        (["run", "--train.loss", "hinge"], "train.loss"),
        (["run", "--data.mixup_fraction", "0.9", "--data.noise_fraction", "0.5"], "data.mixup_fraction"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_help_shows_the_docstring_under_each_config_field(capsys):
    # Parsing reads the docstrings only for --help (they take a second or more): check they are there.
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--train.margin_weight" in text and "weight of a hinge added to the loss" in text


def test_unknown_key_in_a_yaml_file_is_rejected(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  max_epochs: 3\n  dropout: 0.5\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "out")]) == EXIT_CONFIG_ERROR
    assert "dropout" in capsys.readouterr().err


def test_range_checks_raise_config_error():
    with pytest.raises(ConfigError, match="train.batch_size"):
        TrainConfig(batch_size=0)


def test_fingerprint_ignores_execution_only_fields():
    base = result_fields(Config())
    moved = result_fields(Config(out="elsewhere", address="auto", train=TrainConfig(devices=4, loader_workers=3)))
    assert fingerprint(base) == fingerprint(moved)
    assert fingerprint(base) != fingerprint(result_fields(Config(train=TrainConfig(max_epochs=3))))


def test_round_students_train_30_epochs_for_classification_and_all_of_them_for_regression():
    from pipeline.config import AdaptConfig, Config, TaskConfig, TrainConfig

    train = TrainConfig(max_epochs=150)
    assert round_epochs(Config(out="x", train=train)) == 30
    assert round_epochs(Config(out="x", train=train, task=TaskConfig(kind="regression"))) == 150
    assert round_epochs(Config(out="x", train=train, adapt=AdaptConfig(round_epochs=200))) == 150
    assert round_epochs(Config(out="x", train=train, task=TaskConfig(kind="regression"),
                               adapt=AdaptConfig(round_epochs=10))) == 10
