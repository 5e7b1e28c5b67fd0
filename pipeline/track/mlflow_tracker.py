"""MLflow as a tracker: one MLflow run per output directory, found again by a tag, so every stage (and
every rerun, with tracking added later or not) logs into the same run; a child run per active round.

The student is logged as an MLflow model of the ONNX flavour with its signature (read off the model
by running it once), so the registry can register it and a server can load `models:/NAME@champion`
without this package: a Lightning checkpoint logged as an artifact would be neither. Its weights and
card ride along as the model's extra files, so the pipeline can load a registered version again and
compare it with a challenger (pipeline/promote/mlflow_registry.py).
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager

from pipeline.errors import UserError
from pipeline.run import storage
from pipeline.track.mlflow_store import experiment_id, open_client, require_mlflow, store_errors
from pipeline.track.tracker import StudentFiles, Tracker, run_key

KEY = "distillery.run"  # the run's identity (tracker.run_key): output directory and config fingerprint
OUT = "distillery.out"
FINGERPRINT = "distillery.fingerprint"
SENT = "distillery.sent."  # markers: what the run has been sent
STUDENT_MODEL = "distillery.student_model"  # "<weights sha256> <model URI>" of the student logged last
STUDENT_SHA = "distillery.student_sha256"  # on the logged model, as on a registered version
PARENT = "mlflow.parentRunId"  # MLflow's own tag for a child run
MODEL_NAME = "student"
BATCH_METRICS, BATCH_PARAMS = 1000, 100  # MLflow's limits per log_batch call
ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class MlflowTracker(Tracker):
    def __init__(self, client, uri: str, run_id: str, key: str):
        self.client, self.uri, self.run_id, self.key = client, uri, run_id, key
        self.to = f"mlflow:{uri}"

    # -- finding the run ---------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: str, experiment: str, out: str, fingerprint: str, run_name: str,
             run_id: str | None = None) -> MlflowTracker:
        """The output directory's run in `experiment` (started when missing), or the run `run_id`."""
        client = open_client(uri)
        if run_id:
            try:
                run = client.get_run(run_id)
            except Exception as exc:
                raise UserError(f"track.run_id {run_id} is no run in the MLflow store {uri}.") from exc
            return cls(client, uri, run_id, run.data.tags.get(KEY) or run_id)
        key = run_key(out, fingerprint)
        with store_errors(uri):
            experiment_ids = [experiment_id(client, experiment, uri)]
            found = cls._find(client, experiment_ids, key)
            if found is None:
                found = client.create_run(experiment_ids[0], run_name=run_name,
                                          tags={KEY: key, OUT: out, FINGERPRINT: fingerprint}).info.run_id
        return cls(client, uri, found, key)

    @classmethod
    def of_run_dir(cls, client, uri: str, experiment: str, out: str, fingerprint: str, run_name: str) -> MlflowTracker:
        """The output directory's run in any experiment of the store (it may have been tracked under any
        name), else a new one in `experiment`: where a promotion logs a student that was never tracked."""
        key = run_key(out, fingerprint)
        with store_errors(uri):
            everywhere = [e.experiment_id for e in client.search_experiments()]
            found = cls._find(client, everywhere, key) if everywhere else None
        if found is not None:
            return cls(client, uri, found, key)
        return cls.open(uri, experiment, out, fingerprint, run_name)

    @staticmethod
    def _find(client, experiment_ids: list[str], key: str) -> str | None:
        runs = client.search_runs(experiment_ids, f"tags.`{KEY}` = '{key}'", max_results=1)
        return runs[0].info.run_id if runs else None

    # -- logging -----------------------------------------------------------------------------------

    def failures(self) -> tuple[type[BaseException], ...]:
        from mlflow.exceptions import MlflowException

        return MlflowException, OSError

    def _tags(self) -> dict:
        return self.client.get_run(self.run_id).data.tags

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        held = self.client.get_run(self.run_id).data.params  # MLflow refuses to change a parameter
        todo = [Param(k, v) for k, v in params.items() if k not in held]
        for i in range(0, len(todo), BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=todo[i:i + BATCH_PARAMS])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.log_series([(step, metrics)])

    def log_series(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        todo = [Metric(k, float(v), now, step) for step, metrics in rows for k, v in metrics.items()]
        for i in range(0, len(todo), BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=todo[i:i + BATCH_METRICS])

    def log_files(self, files: dict[str, bytes]) -> None:
        if not files:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                path = os.path.join(tmp, *name.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
            self.client.log_artifacts(self.run_id, tmp)

    def log_student(self, student: StudentFiles) -> str:
        if student.onnx is None or not storage.exists(student.onnx):
            return ""
        sha, _, uri = self._tags().get(STUDENT_MODEL, "").partition(" ")
        if sha == student.sha256 and uri:
            return uri
        mlflow = require_mlflow()
        import mlflow.onnx
        import onnx

        data = storage.read_bytes(student.onnx)
        with tempfile.TemporaryDirectory() as tmp:
            extra = []
            for path in student.files:  # by their own names: extra_files/student.safetensors, ...
                extra.append(os.path.join(tmp, path.rstrip("/").rsplit("/", 1)[-1]))
                with open(extra[-1], "wb") as f:
                    f.write(storage.read_bytes(path))
            mlflow.set_tracking_uri(self.uri)  # the fluent API (log_model) reads the global store
            with _in_run(mlflow, self.run_id):
                info = mlflow.onnx.log_model(
                    onnx.load_from_string(data), name=MODEL_NAME, signature=signature(data), extra_files=extra,
                    # Given, not inferred: inferring loads the model in a subprocess, seconds for two names.
                    pip_requirements=mlflow.onnx.get_default_pip_requirements(),
                    save_as_external_data=False,  # one self-contained model.onnx, as the run's student.onnx
                    tags={STUDENT_SHA: student.sha256})
        self.client.set_tag(self.run_id, STUDENT_MODEL, f"{student.sha256} {info.model_uri}")
        return info.model_uri

    def marker(self, name: str) -> str | None:
        return self._tags().get(SENT + name)

    def set_marker(self, name: str, value: str) -> None:
        self.client.set_tag(self.run_id, SENT + name, value)

    def child(self, name: str) -> MlflowTracker:
        key = run_key(self.key, "", name)
        experiment = self.client.get_run(self.run_id).info.experiment_id
        found = self._find(self.client, [experiment], key)
        if found is None:
            found = self.client.create_run(experiment, run_name=name, tags={KEY: key, PARENT: self.run_id}).info.run_id
        return MlflowTracker(self.client, self.uri, found, key)

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


@contextmanager
def _in_run(mlflow, run_id: str):
    """The fluent API's active run is `run_id` (a caller's own active run stays the parent)."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield


def signature(model: bytes):
    """The ONNX model's signature, from running it once on a batch of two: input and output as tensors
    with the batch dimension free, as a server sees them."""
    import numpy as np
    import onnxruntime as ort
    from mlflow.models import infer_signature

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 2 for d in first.shape]
    x = np.random.default_rng(0).random(shape).astype(ONNX_TYPES.get(first.type, "float32"))
    outputs = session.run(None, {first.name: x})
    y = outputs[0] if len(outputs) == 1 else {o.name: v for o, v in zip(session.get_outputs(), outputs)}
    return infer_signature(x, y)


def lightning_logger(to: str, run_id: str):
    """Lightning's own MLFlowLogger, logging the training curves into the run `run_id`."""
    require_mlflow()
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(tracking_uri=to.partition(":")[2], run_id=run_id)
