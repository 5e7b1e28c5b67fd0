"""promote --registry mlflow:NAME and rollback, against a real MLflow store (a SQLite file made here).

Two runs share one teacher and one set of held-out shards (copies of the shared trained run), as in
test_promote.py: `good` holds its trained student, `weak` the same architecture untrained, exported to
ONNX by the train stage. `good` was also sent to the store by its train stage (--track.to), `weak`
never was, so a promotion registers one student that the tracker logged and one it logs itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline.__main__ import main
from pipeline.config import TrackConfig
from pipeline.errors import EXIT_CONFIG_ERROR, EXIT_GATE_FAILED, EXIT_OK, EXIT_USER_ERROR
from pipeline.train.stage import run_train_stage
from pipeline.train.student import build_student, load_student_dir, save_weights
from tests.test_track import new_store

NAME = "digits-student"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return new_store(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(trained_run, store, tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-promote")
    good, weak = str(base / "good"), str(base / "weak")
    shutil.copytree(trained_run.out, good)
    shutil.copytree(trained_run.out, weak)
    run_train_stage(dataclasses.replace(trained_run, out=good, track=TrackConfig(to=f"mlflow:{store}")))
    _, card, _ = load_student_dir(f"{weak}/student")
    torch.manual_seed(0)
    save_weights(build_student(card.arch, card.kwargs, card.input_shape, card.num_outputs), f"{weak}/student")
    os.remove(f"{weak}/student/student.onnx")  # exported from the trained weights
    run_train_stage(dataclasses.replace(trained_run, out=weak))  # reuses the student, exports it again
    return SimpleNamespace(good=good, weak=weak)


def promote(run: str, store: str, *options: str, name: str = NAME) -> int:
    return main(["promote", run, "--registry", f"mlflow:{name}", "--mlflow-uri", store, *options])


def rollback(store: str, name: str = NAME) -> int:
    return main(["rollback", "--registry", f"mlflow:{name}", "--mlflow-uri", store])


def one_error_line(capsys) -> str:
    """The one line a refusal (refused: ...) or a user's mistake (error: ...) prints."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def aliases(store: str, name: str = NAME) -> dict:
    from mlflow import MlflowClient

    return {alias: str(version) for alias, version in MlflowClient(store).get_registered_model(name).aliases.items()}


def version(store: str, number: str, name: str = NAME):
    from mlflow import MlflowClient

    return MlflowClient(store).get_model_version(name, number)


def served(store: str, x: np.ndarray, capsys) -> np.ndarray:
    """What a server gets from models:/NAME@champion (MLflow's note that this machine has no GPU for the
    model's CUDA provider is left out of the commands' output)."""
    import mlflow

    mlflow.set_tracking_uri(store)
    outputs = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(x)
    capsys.readouterr()
    return next(iter(outputs.values()))


def student_outputs(run: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(f"{run}/student/student.onnx", providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def sha(run: str) -> str:
    return hashlib.sha256(open(f"{run}/student/student.safetensors", "rb").read()).hexdigest()


def test_champion_moves_only_when_the_comparison_allows_and_rollback_moves_it_back(runs, store, capsys):
    from mlflow import MlflowClient

    client = MlflowClient(store)
    x = np.random.default_rng(2).random((4, 1, 8, 8)).astype(np.float32)
    # Into an empty registry: the gate alone decides.
    assert promote(runs.good, store) == EXIT_OK
    assert f"as version 1 in mlflow:{NAME}" in capsys.readouterr().out
    assert aliases(store) == {"champion": "1"}
    first = version(store, "1")
    assert first.tags["distillery.student_sha256"] == sha(runs.good)
    # The version is the model the train stage logged in good's tracked run, not a second copy.
    tracked = client.get_run(first.run_id)
    assert tracked.data.tags["distillery.out"] == runs.good
    assert first.source == tracked.data.tags["distillery.student_model"].split(" ")[1]
    np.testing.assert_allclose(served(store, x, capsys), student_outputs(runs.good, x), rtol=1e-5, atol=1e-6)

    # A worse challenger: refused (exit 3), registered with the challenger alias and the reason; champion stays.
    assert promote(runs.weak, store) == EXIT_GATE_FAILED
    line = one_error_line(capsys)
    assert line.startswith("refused: the challenger's held-out top-1 agreement") and "champion version 1's" in line
    assert f"version 1 stays current (the challenger is version 2 of {NAME}, alias challenger)" in line
    assert aliases(store) == {"champion": "1", "challenger": "2"}
    refused = version(store, "2")
    assert "is below the champion version 1's" in refused.tags["distillery.refused"]
    assert client.get_run(refused.run_id).data.tags["distillery.out"] == runs.weak  # logged by the promotion
    np.testing.assert_allclose(served(store, x, capsys), student_outputs(runs.good, x), rtol=1e-5, atol=1e-6)

    # The champion again: nothing to do.
    assert promote(runs.good, store) == EXIT_OK
    assert "nothing to do" in capsys.readouterr().out

    # Allowed by the tolerance: the refused version is promoted, not registered twice.
    assert promote(runs.weak, store, "--tolerance", "1") == EXIT_OK
    assert aliases(store) == {"champion": "2"}  # no longer a refused challenger
    promoted = version(store, "2")
    assert promoted.tags["distillery.previous_champion"] == "1" and "distillery.refused" not in promoted.tags
    assert len(client.search_model_versions(f"name='{NAME}'")) == 2
    np.testing.assert_allclose(served(store, x, capsys), student_outputs(runs.weak, x), rtol=1e-5, atol=1e-6)

    # Rollback: champion back to the version it replaced; from the first champion there is nothing before.
    capsys.readouterr()
    assert rollback(store) == EXIT_OK
    assert f"rolled back mlflow:{NAME} from version 2 to version 1; models:/{NAME}@champion -> version 1" in \
        capsys.readouterr().out
    assert aliases(store) == {"champion": "1"}
    np.testing.assert_allclose(served(store, x, capsys), student_outputs(runs.good, x), rtol=1e-5, atol=1e-6)
    assert rollback(store) == EXIT_USER_ERROR
    assert f"version 1 is the first champion of {NAME}" in one_error_line(capsys)


def test_the_gate_refuses_a_first_challenger_and_leaves_no_champion(runs, store, capsys):
    assert promote(runs.weak, store, "--min-agreement", "0.99", name="gated") == EXIT_GATE_FAILED
    line = one_error_line(capsys)
    assert "is below --min-agreement 0.99; gated still has no champion" in line
    assert aliases(store, "gated") == {"challenger": "1"}
    assert rollback(store, "gated") == EXIT_USER_ERROR
    assert "gated has no champion" in one_error_line(capsys)


def test_each_registry_mistake_is_one_sentence_and_an_exit_code(runs, store, tmp_path, monkeypatch, capsys):
    good = runs.good
    assert main(["promote", good, "--registry", "mlflow:", "--mlflow-uri", store]) == EXIT_CONFIG_ERROR
    assert "names no registered model" in one_error_line(capsys)
    assert main(["rollback", "--registry", "mlflow:two words", "--mlflow-uri", store]) == EXIT_CONFIG_ERROR
    assert "a registered model's name here is letters, digits" in one_error_line(capsys)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["promote", good, "--registry", f"mlflow:{NAME}"]) == EXIT_CONFIG_ERROR
    assert "names no MLflow store" in one_error_line(capsys)
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert promote(good, f"sqlite:///{missing}") == EXIT_USER_ERROR
    assert f"directory {missing.parent} does not exist" in one_error_line(capsys)
    assert promote(str(tmp_path / "no-run"), store) == EXIT_USER_ERROR
    assert "does not exist; expected the output directory of a finished run" in one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert rollback(store) == EXIT_USER_ERROR
    assert "MLflow is not installed here" in one_error_line(capsys)
