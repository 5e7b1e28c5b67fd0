"""--track.to: a run's config, curves, report and student in a real MLflow store (a SQLite file made
here) and in a real TensorBoard directory, read back with TensorBoard's own reader.

One store for the module, and one run: a copy of the shared labeled run, trained and evaluated with
tracking to the store, so the curves arrive through Lightning's own logger. Copies of that finished run,
rerun through the CLI with a tracker they never sent anything to, send what they have (the curves
replayed from the CSV logs).
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import json
import os
import shutil
import sys

import numpy as np
import onnxruntime as ort
import pytest

from pipeline import track
from pipeline.__main__ import main
from pipeline.config import TrackConfig
from pipeline.errors import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_USER_ERROR
from pipeline.evaluate.stage import run_eval_stage, track_report
from pipeline.run.rundir import RunPaths
from pipeline.track import figures
from pipeline.train.stage import run_train_stage
from pipeline.train.trainer import make_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _empty_store(base: str) -> str:
    """A new SQLite store's file, made once per test session's directory: MLflow builds its tables by
    running every migration, seconds of work that a copy of the file skips."""
    from pipeline.track.mlflow_store import open_client

    path = f"{base}/empty-store/mlflow.db"
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open_client(f"sqlite:///{path}.new")
        os.replace(f"{path}.new", path)
    return path


def new_store(tmp_path_factory) -> str:
    """The URI of a store of its own (for one test module), in a fresh directory."""
    directory = tmp_path_factory.mktemp("mlflow")
    shutil.copy(_empty_store(str(tmp_path_factory.getbasetemp())), directory / "mlflow.db")
    return f"sqlite:///{directory}/mlflow.db"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return new_store(tmp_path_factory)


@pytest.fixture(scope="module")
def mlflow_run(labeled_run, store, tmp_path_factory):
    """A copy of the shared labeled run, trained and evaluated with tracking to the store: the curves
    arrive through Lightning's own MLFlowLogger."""
    out = tmp_path_factory.mktemp("tracked") / "out"
    shutil.copytree(labeled_run.out, out)
    cfg = dataclasses.replace(labeled_run, out=str(out), track=TrackConfig(to=f"mlflow:{store}"))
    cfg.eval = dataclasses.replace(cfg.eval, latency=False)
    run_train_stage(cfg)
    run_eval_stage(cfg)
    return cfg


def _client(store):
    from mlflow import MlflowClient

    return MlflowClient(store)


def _run_of(store, out, experiment="distillery"):
    client = _client(store)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`distillery.out` = '{os.path.abspath(out)}'")
    assert len(runs) == 1, runs
    return client, runs[0]


def _student_outputs(student_dir: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(os.path.join(student_dir, "student.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_a_run_sends_its_config_curves_figures_report_and_a_registrable_student_to_mlflow(mlflow_run, store):
    import mlflow

    client, run = _run_of(store, mlflow_run.out)
    paths = RunPaths(mlflow_run.out)
    report = json.loads(open(paths.report_json).read())
    assert run.info.status == "FINISHED" and run.info.run_name == "out"
    # The config, as config.yaml records it.
    assert run.data.params["train.max_epochs"] == "2" and run.data.params["data.shards"] == "3"
    # The curves, per epoch, as Lightning's MLFlowLogger sent them live.
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [0, 1]
    assert [m.value for m in losses] == pytest.approx(report["curves"]["train/loss"])
    # Every figure of report.json, under its path in the report.
    assert run.data.metrics["agreement/heldout/top1"] == pytest.approx(report["agreement"]["heldout"]["top1"])
    assert run.data.metrics["params/student"] == report["params"]["student"]
    assert figures.report_figures(report).keys() <= run.data.metrics.keys()
    # The report and its plots as files.
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "report.json", "report.md", "config.yaml", "plots"} <= names
    assert "plots/curves.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    # The student: an ONNX model with its signature, that MLflow registers and serves as the run's student.onnx.
    model_uri = run.data.tags["distillery.student_model"].split(" ")[1]
    info = mlflow.models.get_model_info(model_uri)
    assert "onnx" in info.flavors
    assert info.signature.inputs.inputs[0].shape == (-1, 1, 8, 8)
    mlflow.set_tracking_uri(store)
    version = mlflow.register_model(model_uri, "tracked-student")
    x = np.random.default_rng(1).random((5, 1, 8, 8)).astype(np.float32)
    served = mlflow.pyfunc.load_model(f"models:/tracked-student/{version.version}").predict(x)
    np.testing.assert_allclose(next(iter(served.values())), _student_outputs(paths.student_dir, x),
                               rtol=1e-5, atol=1e-6)
    # Its weights and card ride along, so the pipeline can load a registered version again.
    model = mlflow.artifacts.download_artifacts(model_uri, tracking_uri=store)
    assert sorted(os.listdir(os.path.join(model, "extra_files"))) == ["student.json", "student.safetensors"]


def _finished_copy(run, tmp_path, name: str = "finished") -> str:
    out = tmp_path / name
    shutil.copytree(run.out, out, ignore=shutil.ignore_patterns(".lock"))
    return str(out)


def test_a_finished_run_rerun_with_tracking_added_is_the_same_run_and_sends_what_it_has(mlflow_run, store, tmp_path,
                                                                                        capsys):
    """A finished run, rerun with a tracker it never sent anything to (here: another experiment)."""
    out = _finished_copy(mlflow_run, tmp_path)
    argv = ["run", "--out", out, "--config", f"{out}/config.yaml", "--track.to", f"mlflow:{store}",
            "--track.experiment", "reruns"]
    assert main(argv) == EXIT_OK
    assert capsys.readouterr().out.startswith(f"nothing to do: {out} is finished")
    client, run = _run_of(store, out, "reruns")
    # Its curves are replayed from the CSV logs, at the steps Lightning gave every logger.
    rows = figures.logged_curves(f"{out}/student/logs")
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in losses] == [(s, pytest.approx(v["train/loss"])) for s, v in rows
                                                   if "train/loss" in v]
    assert "agreement/heldout/top1" in run.data.metrics and "distillery.student_model" in run.data.tags
    # Rerun again: nothing is sent twice.
    assert main(argv) == EXIT_OK
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == len(losses)
    assert len(client.get_metric_history(run.info.run_id, "agreement/heldout/top1")) == 1
    assert len(client.search_logged_models([run.info.experiment_id])) == 1


def test_active_rounds_go_to_child_runs_and_their_figures_to_series_over_rounds(mlflow_run, store):
    """What the rounds' loop sends (pipeline/adapt/loop.py): a child run per round's student, and each
    round's figures as it comes, none twice."""
    from mlflow import MlflowClient

    child = track.bind(mlflow_run, child="round-0")
    client, parent = _run_of(store, mlflow_run.out)
    assert MlflowClient(store).get_run(child.track.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert track.bind(mlflow_run, child="round-0").track.run_id == child.track.run_id  # found again, not a second
    rounds = [{"round": r, "labels": 256 * (r + 1), "shards": r + 1, "heldout": {"top1": 0.5 + r / 10},
               "train": {"top1": 0.6 + r / 10}} for r in range(3)]
    track.log_rounds(mlflow_run, rounds[:2])
    track.log_rounds(mlflow_run, rounds)
    history = client.get_metric_history(parent.info.run_id, "adapt/heldout/top1")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, pytest.approx(0.6)), (2, pytest.approx(0.7))]


def test_a_run_sends_the_same_to_tensorboard_read_back_by_tensorboard(mlflow_run, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, board = _finished_copy(mlflow_run, tmp_path, "out"), tmp_path / "board"
    argv = ["run", "--out", out, "--config", f"{out}/config.yaml", "--track.to", f"tensorboard:{board}"]
    assert main(argv) == EXIT_OK
    report = json.loads(open(RunPaths(out).report_json).read())
    events = EventAccumulator(str(board / "out"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    # The curves per epoch, and the figures at step 0.
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(report["curves"]["train/loss"])
    assert events.Scalars("agreement/heldout/top1")[0].value == pytest.approx(report["agreement"]["heldout"]["top1"])
    # The plots as images, report.md and the config as text.
    assert {"plots/curves", "plots/confusion"} <= set(tags["images"])
    assert {"report/text_summary", "config/text_summary"} <= set(tags["tensors"])
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| train.max_epochs | 2 |" in config
    # The files beside the events: the report and the student.
    assert (board / "out" / "files" / "report.html").is_file()
    assert {"student.onnx", "student.safetensors", "student.json"} <= set(os.listdir(board / "out" / "student"))
    # Training bound to the run sends its curves there live, through Lightning's TensorBoardLogger.
    cfg = dataclasses.replace(mlflow_run, out=out, track=TrackConfig(to=f"tensorboard:{board}"))
    bound = track.bind(cfg)
    assert bound.track.run_id == "out"
    loggers = make_trainer(bound, f"{out}/student").loggers
    assert [type(x).__name__ for x in loggers] == ["CSVLogger", "TensorBoardLogger"]
    assert os.path.abspath(loggers[1].log_dir) == str(board / "out")
    # Another run of the same name gets a folder of its own.
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=7))
    assert track.bind(other).track.run_id == "out-2"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    return err.strip()


def test_each_tracking_mistake_is_one_sentence_and_an_exit_code(mlflow_run, tmp_path, monkeypatch, capsys):
    out = _finished_copy(mlflow_run, tmp_path)
    assert main(["eval", out, "--track.to", "wandb"]) == EXIT_CONFIG_ERROR
    assert "track.to must be none, mlflow, mlflow:URI, tensorboard or tensorboard:DIR" in _one_error_line(capsys)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["eval", out, "--track.to", "mlflow"]) == EXIT_CONFIG_ERROR
    assert "names no MLflow store" in _one_error_line(capsys)
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert main(["eval", out, "--track.to", f"mlflow:sqlite:///{missing}"]) == EXIT_USER_ERROR
    assert f"directory {missing.parent} does not exist" in _one_error_line(capsys)
    (tmp_path / "file").write_text("")
    assert main(["eval", out, "--track.to", f"tensorboard:{tmp_path / 'file' / 'board'}"]) == EXIT_USER_ERROR
    assert "cannot be written to" in _one_error_line(capsys)
    # The tracker's package missing from this environment.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert main(["eval", out, "--track.to", f"mlflow:sqlite:///{tmp_path}/m.db"]) == EXIT_USER_ERROR
    assert "MLflow is not installed here" in _one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert main(["eval", out, "--track.to", f"tensorboard:{tmp_path}/board"]) == EXIT_USER_ERROR
    assert "TensorBoard is not installed here" in _one_error_line(capsys)
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "board").exists()


def test_without_a_tracker_neither_mlflow_nor_tensorboard_is_imported(mlflow_run, tmp_path, monkeypatch):
    """No module imports either at its top, and a stage's work without --track.to never reaches for them:
    here they cannot be imported at all, as where the track extra is not installed."""
    for path in [*glob.glob(f"{ROOT}/pipeline/**/*.py", recursive=True), *glob.glob(f"{ROOT}/students/*.py")]:
        tree = ast.parse(open(path).read())
        top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        assert not top & {"mlflow", "tensorboard", "tensorboardX"}, path
    for name in ("mlflow", "tensorboard", "tensorboardX"):
        monkeypatch.setitem(sys.modules, name, None)
    out = _finished_copy(mlflow_run, tmp_path)
    cfg = dataclasses.replace(mlflow_run, out=out, track=TrackConfig())
    assert track.bind(cfg) is cfg and track.lightning_loggers(cfg) == []
    assert [type(x).__name__ for x in make_trainer(cfg, f"{out}/student").loggers] == ["CSVLogger"]
    run_train_stage(cfg)  # reused: what it sends with a tracker, it skips
    track_report(cfg, RunPaths(out))
