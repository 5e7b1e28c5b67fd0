"""What the program tells people and machines while it works.

Three modes, chosen with `--quiet` and `--log-format` (`configure`) and kept in the environment, so
that DDP ranks spawned on this machine follow them too:
- text: progress bars where stderr is a terminal; elsewhere (CI, cron, Kubernetes) one progress
  line every LINE_EVERY_S seconds and one at the end (stage, done/total, rate, ETA), never a redraw;
- json: one JSON object per event: progress and log records on stderr, results on stdout;
- quiet: no progress, warnings and errors only; results still on stdout.
Third-party chatter (Lightning's tips and device lines, deprecation warnings about its own internals,
Ray's notice that token authentication is on, which it always is here) is silenced in every mode.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Optional

ENV = "DISTILLERY_OUTPUT"
MODES = ("text", "json", "quiet")
LINE_EVERY_S = 10.0  # seconds between progress lines outside a terminal
_handler: Optional[logging.Handler] = None  # the log handler `configure` installed

QUIET_LOGGERS = {  # logger -> the lowest level still shown
    "lightning.pytorch": logging.WARNING, "lightning.fabric": logging.WARNING, "lightning": logging.WARNING,
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    "onnxscript": logging.WARNING, "onnx_ir": logging.WARNING, "torch.onnx": logging.ERROR,
}
QUIET_WARNINGS = (  # messages (regular expressions) of warnings about Lightning's internals or deliberate choices
    r".*isinstance\(treespec, LeafSpec\).*",
    r"Your `IterableDataset` has `__len__` defined",  # ours is exact per rank and worker (shards/reader.py)
    r"The number of training batches .* is smaller than the logging interval",
    r".*does not have many workers which may be a bottleneck.*",  # training data in memory needs none
)


def mode() -> str:
    value = os.environ.get(ENV, "text")
    return value if value in MODES else "text"


def bars() -> bool:
    """Whether progress is drawn as bars (text mode in a terminal)."""
    return mode() == "text" and sys.stderr.isatty()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"event": "log", "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage(), "time": round(record.created, 3)})


def silence_third_party() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def configure(log_format: str = "text", quiet: bool = False, stage: str = "") -> None:
    """Set the mode for this process and its children, and route log records to stderr in it."""
    os.environ[ENV] = "quiet" if quiet else log_format
    os.environ[ENV + "_STAGE"] = stage
    global _handler
    root = logging.getLogger()
    if _handler is not None:  # configured before (a program calling main() twice): replace ours only
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(JsonFormatter() if mode() == "json" else logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(_handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    silence_third_party()
    logging.captureWarnings(True)  # warnings become log records: one line each, JSON in json mode


def result(text: str, stage: str = "", **fields: Any) -> None:
    """A result for stdout: the text as is, or one JSON object."""
    if mode() == "json":
        print(json.dumps({"event": "result", "stage": stage or os.environ.get(ENV + "_STAGE", ""), "message": text,
                          **fields}), flush=True)
    else:
        print(text, flush=True)


def error(text: str, exit_code: int) -> None:
    """A one-line error on stderr."""
    if mode() == "json":
        print(json.dumps({"event": "error", "message": text, "exit_code": exit_code}), file=sys.stderr, flush=True)
    else:
        print(f"error: {text}", file=sys.stderr, flush=True)


class Progress:
    """Progress of one piece of work: a tqdm bar in a terminal, lines or JSON events elsewhere."""

    def __init__(self, stage: str, total: Optional[int], unit: str = "", initial: int = 0):
        self.stage, self.total, self.unit = stage, total, unit
        self.done = self.start_done = initial
        self.extra: dict[str, Any] = {}
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if bars():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=stage, unit=unit or "it", unit_scale=True,
                            file=sys.stderr, dynamic_ncols=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close(finished=exc[0] is None)

    def update(self, n: int = 1, **extra: Any) -> None:
        self.done += n
        self.extra.update(extra)
        if self.bar is not None:
            self.bar.update(n)
            if extra:
                self.bar.set_postfix({k: _format(v) for k, v in self.extra.items()}, refresh=False)
        elif time.monotonic() - self.last_line >= LINE_EVERY_S:
            self._emit("progress")

    def note(self, text: str) -> None:
        """A line about this work (a retry, a skipped item) that does not break a bar."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif mode() == "json":
            print(json.dumps({"event": "note", "stage": self.stage, "message": text}), file=sys.stderr, flush=True)
        elif mode() != "quiet":
            print(text, file=sys.stderr, flush=True)

    def close(self, finished: bool = True) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif finished and self.done > self.start_done:
            self._emit("done")

    def _emit(self, event: str) -> None:
        self.last_line = now = time.monotonic()
        if mode() == "quiet":
            return
        elapsed = now - self.started
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if self.total and rate > 0 else None
        if mode() == "json":
            print(json.dumps({"event": event, "stage": self.stage, "done": self.done, "total": self.total,
                              "unit": self.unit, "rate_per_s": round(rate, 3), "elapsed_s": round(elapsed, 1),
                              "eta_s": None if eta is None else round(eta, 1),
                              **{k: _plain(v) for k, v in self.extra.items()}}), file=sys.stderr, flush=True)
            return
        of = f"/{self.total:,}" if self.total else ""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        tail = f", ETA {eta:.0f} s" if event == "progress" and eta is not None else f", {elapsed:.1f} s"
        extra = "".join(f", {k} {_format(v)}" for k, v in self.extra.items())
        print(f"{self.stage}: {self.done:,}{of} {self.unit + 's' if self.unit else ''}{share}, "
              f"{_rate(rate)} {self.unit or 'item'}s/s{tail}{extra}", file=sys.stderr, flush=True)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"
