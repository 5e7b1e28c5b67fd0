"""What a tracker does for the stages, whichever tracker it is (pipeline/track/mlflow_tracker.py,
tensorboard_tracker.py): one run of the tracker per output directory, and a child run per active round.

A tracker only reports: the run's own files (report.json, the student's folder, the CSV curves) stay
the record every stage reads, and nothing is ever read back from a tracker into a run. So a tracker
may be added to a finished run, and each call may be repeated: what a run has already sent is marked
in the tracker (`marker`), not in the run's directory.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pipeline.errors import UserError


@dataclass(frozen=True)
class StudentFiles:
    """A trained student as the train stage left it, named by the stage that knows its files."""

    onnx: str | None  # student.onnx (a path or URI); None where there is none (a round's student, a failed export)
    files: tuple[str, ...]  # the weights and the card: kept with the model, so the pipeline can load it again
    sha256: str  # of the weights: the student's identity, as the file registry records it


def run_key(out: str, fingerprint: str, child: str | None = None) -> str:
    """The identity of a run in a tracker: its output directory and config fingerprint (and the child
    run's name): a hex string, safe in any tracker's search syntax."""
    text = f"{out}\n{fingerprint}" + (f"\n{child}" if child else "")
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Tracker(ABC):
    """One run in a tracker. `to` and `run_id` are what a process elsewhere (a DDP rank, a Ray Train
    worker) needs to log into the same run: the stages carry them in `cfg.track`."""

    to: str  # track.to with its location resolved (an absolute path, a store's URI)
    run_id: str  # an MLflow run id, or the run's folder under the TensorBoard directory
    params_sent = False  # the config has gone out from this process (set by pipeline.track.tracker())

    @contextmanager
    def errors(self) -> Iterator[None]:
        """A tracker that fails after it was opened (a store gone, a disk full) is one sentence: the run's
        own files are complete, and a rerun sends what is missing."""
        try:
            yield
        except self.failures() as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise UserError(f"{self.to} failed ({lines[0][:200]}); the run's own files are complete: run the "
                            "command again to send the rest.") from exc

    def failures(self) -> tuple[type[BaseException], ...]:
        """The exception types of the tracker's own failures."""
        return (OSError,)

    @abstractmethod
    def log_params(self, params: dict[str, str]) -> None:
        """The run's config; a key the run already holds keeps its value."""

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...

    def log_series(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Metrics at several steps: (step, metrics) per row."""
        for step, metrics in rows:
            self.log_metrics(metrics, step)

    @abstractmethod
    def log_files(self, files: dict[str, bytes]) -> None:
        """Files by their path in the run (report.html, plots/curves.png, ...)."""

    @abstractmethod
    def log_student(self, student: StudentFiles) -> str:
        """The student as a model of the tracker's own kind; returns where it is (a model URI, a folder).
        A student already logged (the same weights) is not logged again."""

    @abstractmethod
    def marker(self, name: str) -> str | None:
        """What the run records under `name` (what it was sent, e.g. the curves of which weights)."""

    @abstractmethod
    def set_marker(self, name: str, value: str) -> None: ...

    @abstractmethod
    def child(self, name: str) -> Tracker:
        """The child run `name` of this run (an active round's student), started when missing."""

    def finish(self) -> None:
        """The run has everything the pipeline sends (after the eval stage)."""

