"""TensorBoard as a tracker: one folder per run under the directory given (`tensorboard --logdir DIR`
shows them all), a subfolder per active round.

TensorBoard has scalars, images and text, not parameters, artifacts or models, so: the config goes in
as hparams (the HParams tab) and as a text table; report.json's figures as scalars; the plots as
images and report.md as text; and the files themselves (report.html, the student's ONNX file, weights
and card) are copied into the run's folder, so everything about a run is in one place.

A run's folder holds `distillery.json`: which output directory and config it belongs to (a second run
of the same name gets `NAME-2`), and what it has been sent.
"""

from __future__ import annotations

import importlib
import io
import itertools
import json
import os

from pipeline.errors import UserError
from pipeline.run import storage
from pipeline.track.mlflow_store import INSTALL
from pipeline.track.tracker import StudentFiles, Tracker, run_key

RECORD = "distillery.json"
FILES = "files"  # the run's files, under their own names (report.html, plots/curves.png, ...)
STUDENT = "student"


def require_tensorboard() -> None:
    try:
        importlib.import_module("tensorboard")  # what torch.utils.tensorboard writes with
    except ImportError as exc:
        raise UserError(f"TensorBoard is not installed here ({exc}); install the tracking extra: {INSTALL}.") from exc


def _read(folder: str) -> dict | None:
    path = os.path.join(folder, RECORD)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write(folder: str, record: dict) -> None:
    tmp = os.path.join(folder, f".{RECORD}.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(folder, RECORD))


class TensorBoardTracker(Tracker):
    def __init__(self, root: str, run_id: str):
        self.root, self.run_id = root, run_id
        self.to = f"tensorboard:{root}"
        self.folder = os.path.join(root, *run_id.split("/"))
        self._writer = None

    @classmethod
    def open(cls, root: str, out: str, fingerprint: str, run_name: str,
             run_id: str | None = None) -> TensorBoardTracker:
        """The output directory's folder under `root`: the first of NAME, NAME-2, ... that is free or is
        this run's own (started when free), or the folder `run_id`."""
        require_tensorboard()
        try:
            os.makedirs(root, exist_ok=True)
            if run_id:
                return cls._start(root, run_id, {"key": run_id})
            key = run_key(out, fingerprint)
            for n in itertools.count(1):
                name = run_name if n == 1 else f"{run_name}-{n}"
                folder = os.path.join(root, name)
                record = _read(folder)
                if (record is not None and record.get("key") == key) or not os.path.exists(folder):
                    return cls._start(root, name, {"key": key, "out": out, "fingerprint": fingerprint})
        except (OSError, ValueError) as exc:  # ValueError: a record that is not JSON
            why = getattr(exc, "strerror", None) or exc
            raise UserError(f"track.to tensorboard:{root} cannot be written to ({why}).") from exc

    @classmethod
    def _start(cls, root: str, run_id: str, record: dict) -> TensorBoardTracker:
        tracker = cls(root, run_id)
        if _read(tracker.folder) is None:
            os.makedirs(tracker.folder, exist_ok=True)
            _write(tracker.folder, {**record, "sent": {}})
        return tracker

    def writer(self):
        """This process's writer of event files into the run's folder (Lightning's logger has its own)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.folder)
        return self._writer

    def log_params(self, params: dict[str, str]) -> None:
        if self.marker("params"):
            return  # hparams are one session per run
        from torch.utils.tensorboard.summary import hparams

        writer = self.writer()
        for summary in hparams(params, {}):
            writer.file_writer.add_summary(summary)
        rows = "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in params.items())
        writer.add_text("config", f"| parameter | value |\n|---|---|\n{rows}")
        writer.flush()
        self.set_marker("params", "1")

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        writer = self.writer()
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)
        writer.flush()

    def log_files(self, files: dict[str, bytes]) -> None:
        import numpy as np
        from PIL import Image

        writer = self.writer()
        for name, data in files.items():
            path = os.path.join(self.folder, FILES, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            stem = name.rsplit(".", 1)[0]
            if name.endswith(".png"):
                image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                writer.add_image(stem, image, 0, dataformats="HWC")
            elif name.endswith(".md"):
                writer.add_text(stem, data.decode(errors="replace"))
        writer.flush()

    def log_student(self, student: StudentFiles) -> str:
        folder = os.path.join(self.folder, STUDENT)
        if self.marker("student") == student.sha256:
            return folder
        os.makedirs(folder, exist_ok=True)
        for path in (student.onnx, *student.files):
            if path and storage.exists(path):
                with open(os.path.join(folder, path.rstrip("/").rsplit("/", 1)[-1]), "wb") as f:
                    f.write(storage.read_bytes(path))
        self.set_marker("student", student.sha256)
        return folder

    def marker(self, name: str) -> str | None:
        return ((_read(self.folder) or {}).get("sent") or {}).get(name)

    def set_marker(self, name: str, value: str) -> None:
        record = _read(self.folder) or {}
        record.setdefault("sent", {})[name] = value
        _write(self.folder, record)

    def child(self, name: str) -> TensorBoardTracker:
        return self._start(self.root, f"{self.run_id}/{name}", {"key": run_key(self.run_id, "", name)})

    def finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def lightning_logger(to: str, run_id: str):
    """Lightning's own TensorBoardLogger, writing the training curves into the run's folder."""
    require_tensorboard()
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=to.partition(":")[2], name=run_id, version="", default_hp_metric=False)
