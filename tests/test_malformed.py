"""Every file and option a user hands the CLI, malformed: one line on stderr, a documented exit code.

Each case writes a broken version of one thing a user gives (a config file, a teacher checkpoint,
seed data, a run directory's manifest, shard, report, checkpoint, a registry) and runs the cheapest
command that reads it. Each must end with exactly one line on stderr, starting "error:", exit code 1
(a missing or corrupt file) or 2 (a bad config or command line), no traceback, and nothing written
or changed anywhere under the test's directory. Most cases call the CLI's entry point in this
process (a Python start-up and the stages' imports per case would cost seconds each); a few run
`python -m pipeline` as a user does, where a traceback would go straight to the terminal.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from tests.conftest import cli

USER, CONFIG = 1, 2  # the exit codes of pipeline/errors.py
CHEAP = ["--teacher.epochs", "1", "--teacher.width", "4"]  # a case that wrongly passed would still be quick
NO_LATENCY = ["--eval.latency", "false"]


class Ctx:
    """What a case may break: files of its own under `tmp`, and a copy of a finished run (made on first use)."""

    def __init__(self, tmp: Path, finished: str):
        self.tmp, self._finished, self._run = tmp, finished, None

    @property
    def run(self) -> Path:
        if self._run is None:
            self._run = self.tmp / "run"
            shutil.copytree(self._finished, self._run)
        return self._run

    @property
    def new(self) -> str:
        """An output directory no run has used."""
        return str(self.tmp / "new")

    def file(self, name: str, data: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def folder(self, name: str) -> str:
        (self.tmp / name).mkdir(parents=True, exist_ok=True)
        return str(self.tmp / name)


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]  # writes what it breaks, returns the command line
    code: int
    says: str  # a fragment the error line must hold (the thing named)


class Pwned:
    """A pickle that would create a file if it were ever unpickled with code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled(c: Ctx) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": Pwned(str(c.tmp / "PWNED"))}, buffer)
    return buffer.getvalue()


def safetensors_bytes() -> bytes:
    return save_safetensors({"w": torch.zeros(4, 4)})


def npz(c: Ctx, name: str, **arrays) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return c.file(name, buffer.getvalue())


def teacher(c: Ctx, *args: str) -> list[str]:
    return ["teacher", "--out", c.new, *CHEAP, *args]


def checkpoint(name: str, data: Callable[[Ctx], bytes | str]) -> Callable[[Ctx], list[str]]:
    return lambda c: teacher(c, "--teacher.checkpoint", c.file(name, data(c)))


def with_card(text: str) -> Callable[[Ctx], list[str]]:
    """Good weights with a broken card beside them (t.json)."""
    def argv(c: Ctx) -> list[str]:
        c.file("t.json", text)
        return teacher(c, "--teacher.checkpoint", c.file("t.safetensors", safetensors_bytes()))
    return argv


def dataset(path: Callable[[Ctx], str]) -> Callable[[Ctx], list[str]]:
    return lambda c: teacher(c, "--teacher.dataset", path(c))


def config(text: str) -> Callable[[Ctx], list[str]]:
    return lambda c: teacher(c, "--config", c.file("config.yaml", text))


def in_run(rel: str, data: bytes | str | None) -> Callable[[Ctx], Path]:
    """Replace DIR/rel with `data` (None: delete it; "/": make it a directory)."""
    def breaks(c: Ctx) -> Path:
        path = c.run / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        if data == "/":
            path.mkdir(parents=True)
        elif data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        return c.run
    return breaks


def edit_json(rel: str, change: Callable[[dict], object]) -> Callable[[Ctx], Path]:
    """DIR/rel with `change` applied to its JSON."""
    def breaks(c: Ctx) -> Path:
        path = c.run / rel
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        return c.run
    return breaks


def evaluate(breaks: Callable[[Ctx], Path]) -> Callable[[Ctx], list[str]]:
    return lambda c: ["eval", str(breaks(c)), *NO_LATENCY]


def same_size_other_bytes(c: Ctx) -> Path:
    path = c.run / "shards" / "heldout" / "heldout-00000.parquet"
    path.write_bytes(bytes(len(path.read_bytes())))
    return c.run


def manifest_without_shard_fields(c: Ctx) -> Path:
    path = c.run / "shards" / "train" / "manifest.json"
    data = json.loads(path.read_text())
    data["shards"] = [{"index": 0, "path": "train-00000.parquet"}]
    path.write_text(json.dumps(data))
    return c.run


def resume(data: Callable[[Ctx], bytes]) -> Callable[[Ctx], list[str]]:
    """A labeled run with an interrupted training run's checkpoint, continued with --resume."""
    def argv(c: Ctx) -> list[str]:
        shutil.rmtree(c.run / "student")
        c.file("run/student/checkpoints/last.ckpt", data(c))
        return ["train", "--out", str(c.run), "--resume"]
    return argv


def registry(breaks: Callable[[Ctx], str]) -> Callable[[Ctx], list[str]]:
    return lambda c: ["promote", str(c.run), "--registry", breaks(c)]


CASES = [
    # The config file and the command line: exit 2, before any stage starts.
    Case("config-empty", config(""), CONFIG, "config.yaml"),
    Case("config-not-yaml", config("teacher: [width: 8\n  epochs: {"), CONFIG, "config.yaml"),
    Case("config-a-list", config("- teacher\n- data\n"), CONFIG, "config.yaml"),
    Case("config-unknown-key", config("teacher:\n  widht: 8\n"), CONFIG, "widht"),
    Case("config-wrong-type", config("train:\n  max_epochs: many\n"), CONFIG, "max_epochs"),
    Case("config-out-of-range", config("train:\n  max_epochs: 0\n"), CONFIG, "train.max_epochs"),
    Case("config-a-directory", lambda c: teacher(c, "--config", c.folder("conf.yaml")), CONFIG, "conf.yaml"),
    Case("config-missing", lambda c: teacher(c, "--config", str(c.tmp / "nope.yaml")), CONFIG, "nope.yaml"),
    Case("option-wrong-type", lambda c: teacher(c, "--train.batch_size", "big"), CONFIG, "batch_size"),
    Case("option-unknown", lambda c: teacher(c, "--train.dropout", "0.1"), CONFIG, "dropout"),
    Case("option-bad-json", lambda c: teacher(c, "--teacher.kwargs", "{dim: "), CONFIG, "kwargs"),
    Case("no-subcommand", lambda c: [], CONFIG, "stage"),
    Case("out-is-a-file", lambda c: ["teacher", "--out", c.file("out.txt", "x"), *CHEAP], USER, "out.txt"),
    Case("eval-no-such-dir", lambda c: ["eval", str(c.tmp / "nowhere"), *NO_LATENCY], USER, "nowhere"),
    Case("code-dir-missing", lambda c: teacher(c, "--code_dir", str(c.tmp / "nocode")), USER, "nocode"),
    # teacher.checkpoint: exit 1, the teacher stage stops before it writes.
    Case("checkpoint-missing", lambda c: teacher(c, "--teacher.checkpoint", str(c.tmp / "t.safetensors")), USER,
         "t.safetensors"),
    Case("checkpoint-empty", checkpoint("t.safetensors", lambda c: b""), USER, "t.safetensors"),
    Case("checkpoint-not-safetensors", checkpoint("t.safetensors", lambda c: "weights, honest"), USER,
         "t.safetensors"),
    Case("checkpoint-truncated", checkpoint("t.safetensors", lambda c: safetensors_bytes()[:60]), USER,
         "t.safetensors"),
    Case("checkpoint-pickled-pt", checkpoint("t.pt", pickled), USER, "t.pt"),
    Case("checkpoint-garbage-pt", checkpoint("t.pt", lambda c: b"\x80\x04garbage"), USER, "t.pt"),
    Case("checkpoint-a-directory", lambda c: teacher(c, "--teacher.checkpoint", c.folder("t.safetensors")), USER,
         "t.safetensors"),
    Case("checkpoint-garbage-pt2", checkpoint("t.pt2", lambda c: b"PK\x03\x04 not a program"), USER, "t.pt2"),
    Case("checkpoint-garbage-onnx", checkpoint("t.onnx", lambda c: b"\x08\x07 not a model"), USER, "t.onnx"),
    Case("checkpoint-card-not-json", with_card("{arch: cnn"), USER, "t.json"),
    Case("checkpoint-card-a-list", with_card("[]"), USER, "t.json"),
    Case("checkpoint-card-wrong-types", with_card('{"kwargs": 3, "input_shape": "big"}'), USER, "t.json"),
    # teacher.dataset / teacher.test_data: exit 1.
    Case("npz-empty", dataset(lambda c: c.file("seed.npz", b"")), USER, "seed.npz"),
    Case("npz-wrong-keys", dataset(lambda c: npz(c, "seed.npz", pictures=np.zeros((4, 8, 8), np.uint8))), USER,
         "seed.npz"),
    Case("npz-wrong-shape", dataset(lambda c: npz(c, "seed.npz", images=np.zeros(8, np.uint8))), USER, "seed.npz"),
    Case("npz-labels-wrong-shape", dataset(lambda c: npz(c, "seed.npz", images=np.zeros((4, 8, 8), np.uint8),
                                                         labels=np.zeros((4, 2), np.int64))), USER, "seed.npz"),
    Case("npz-strings", dataset(lambda c: npz(c, "seed.npz", images=np.array(["a", "b"]))), USER, "seed.npz"),
    Case("parquet-not-parquet", dataset(lambda c: c.file("seed.parquet", "image,label\n")), USER, "seed.parquet"),
    Case("folder-non-image", dataset(lambda c: c.file("imgs/cat/a.png", "not a png") and str(c.tmp / "imgs")),
         USER, "a.png"),
    Case("folder-empty", dataset(lambda c: c.folder("imgs")), USER, "imgs"),
    Case("folder-where-file", dataset(lambda c: c.folder("seed.npz")), USER, "seed.npz"),
    Case("file-where-folder", dataset(lambda c: c.file("images", "x")), USER, "images"),
    Case("data-root-a-file", lambda c: teacher(c, "--teacher.dataset", "mnist", "--teacher.data_root",
                                               c.file("mnist", "x")), USER, "mnist"),
    Case("test-data-wrong-shape", lambda c: teacher(c, "--teacher.dataset", npz(
        c, "seed.npz", images=np.zeros((4, 8, 8), np.uint8)), "--teacher.test_data", npz(
        c, "test.npz", images=np.zeros((4, 9, 9), np.uint8))), USER, "test.npz"),
    # A run directory's files, read by eval (or by the stage that reads them).
    Case("manifest-empty", evaluate(in_run("shards/train/manifest.json", "")), USER, "manifest.json"),
    Case("manifest-not-json", evaluate(in_run("shards/train/manifest.json", "{shards: [")), USER, "manifest.json"),
    Case("manifest-a-list", evaluate(in_run("shards/train/manifest.json", "[1, 2]")), USER, "manifest.json"),
    Case("manifest-shard-fields", evaluate(manifest_without_shard_fields), USER, "manifest.json"),
    Case("manifest-wrong-types", evaluate(edit_json("shards/train/manifest.json", lambda d: d["shards"][0].update(
        rows="many", bytes=-1))), USER, "manifest.json"),
    Case("manifest-a-directory", evaluate(in_run("shards/train/manifest.json", "/")), USER, "manifest.json"),
    Case("shard-not-parquet", evaluate(in_run("shards/heldout/heldout-00000.parquet", "hello")), USER,
         "heldout-00000.parquet"),
    Case("shard-same-size-other-bytes", evaluate(same_size_other_bytes), USER, "heldout-00000.parquet"),
    Case("shard-a-directory", evaluate(in_run("shards/heldout/heldout-00000.parquet", "/")), USER,
         "heldout-00000.parquet"),
    Case("teacher-card-not-json", evaluate(in_run("teacher/teacher.json", "{")), USER, "teacher.json"),
    Case("teacher-card-a-list", evaluate(in_run("teacher/teacher.json", "[]")), USER, "teacher.json"),
    Case("teacher-card-wrong-types", evaluate(edit_json("teacher/teacher.json", lambda d: d.update(
        input_shape="big", classes=7))), USER, "teacher.json"),
    Case("teacher-weights-garbage", evaluate(in_run("teacher/teacher.safetensors", "x")), USER,
         "teacher.safetensors"),
    Case("student-card-not-json", evaluate(in_run("student/student.json", "{")), USER, "student.json"),
    Case("student-card-wrong-fields", evaluate(in_run("student/student.json", '{"arch": 3}')), USER,
         "student.json"),
    Case("student-card-wrong-types", evaluate(edit_json("student/student.json", lambda d: d.update(
        kwargs=[1], input_shape="big"))), USER, "student.json"),
    Case("student-weights-garbage", evaluate(in_run("student/student.safetensors", "x")), USER,
         "student.safetensors"),
    Case("student-weights-missing", evaluate(in_run("student/student.safetensors", None)), USER,
         "student.safetensors"),
    Case("recorded-config-not-yaml", evaluate(in_run("config.yaml", "teacher: [")), USER, "config.yaml"),
    Case("recorded-config-a-list", evaluate(in_run("config.yaml", "- 1\n")), USER, "config.yaml"),
    Case("report-not-json", lambda c: ["run", "--config", str(in_run("report.json", "{")(c) / "config.yaml"),
                                       "--out", str(c.run), *NO_LATENCY], USER, "report.json"),
    Case("report-wrong-fields", lambda c: ["run", "--config", str(in_run("report.json", '{"x": 1}')(c) / "config.yaml"),
                                           "--out", str(c.run), *NO_LATENCY], USER, "report.json"),
    Case("report-wrong-types", lambda c: ["run", "--config", str(edit_json("report.json", lambda d: d.update(
        agreement=3, params="many"))(c) / "config.yaml"), "--out", str(c.run), *NO_LATENCY], USER, "report.json"),
    Case("sweep-report-not-json", lambda c: ["sweep", str(in_run("report.json", "{")(c)), "--sweep.widths", "[4]"],
         USER, "report.json"),
    # An interrupted training run's checkpoint, continued.
    Case("last-ckpt-garbage", resume(lambda c: b"garbage"), USER, "last.ckpt"),
    Case("last-ckpt-pickled", resume(pickled), USER, "last.ckpt"),
    Case("last-ckpt-a-list", resume(lambda c: _torch_bytes([1, 2, 3])), USER, "last.ckpt"),
    # The registry of promote and rollback.
    Case("registry-a-file", registry(lambda c: c.file("reg", "x")), USER, "reg"),
    Case("registry-current-garbage", registry(lambda c: c.file("reg/current", "../../etc") and str(c.tmp / "reg")),
         USER, "current"),
    Case("registry-current-unknown", registry(lambda c: c.file("reg/current", "v0007") and str(c.tmp / "reg")),
         USER, "v0007"),
    Case("registry-history-not-json", registry(lambda c: c.file("reg/history.json", "[{") and str(c.tmp / "reg")),
         USER, "history.json"),
    Case("registry-history-wrong", registry(lambda c: c.file("reg/history.json", '{"v": 1}') and str(c.tmp / "reg")),
         USER, "history.json"),
    Case("promote-run-without-student", lambda c: ["promote", str(in_run("student", None)(c)), "--registry",
                                                   str(c.tmp / "reg")], USER, "student"),
    Case("rollback-a-file", lambda c: ["rollback", "--registry", c.file("reg", "x")], USER, "reg"),
]


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every folder under `root`, and every file with its size and modification time (lock files
    aside: taking a lock is not writing, though it touches the folder's time)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = ("dir",)
        for name in files:
            if name != ".lock":
                info = os.lstat(os.path.join(folder, name))
                found[os.path.relpath(os.path.join(folder, name), root)] = (info.st_size, info.st_mtime_ns)
    return found


def check(err: str, code: int, case: Case, before: dict, after: dict, tmp: Path) -> None:
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert case.says in lines[0], lines[0]
    assert code == case.code, lines[0]
    assert after == before, f"{case.id} changed {set(after.items()) ^ set(before.items())}"
    assert not (tmp / "PWNED").exists(), "a pickled checkpoint ran code"


@pytest.fixture(scope="module")
def finished(finished_run) -> str:
    return finished_run.out


@pytest.fixture(scope="module")
def one_parser():
    """One parser per command for the module's many in-process runs: parsing does not change it."""
    import functools

    from pipeline import __main__ as entry

    build = entry.build_parser
    entry.build_parser = functools.cache(build)
    yield
    entry.build_parser = build


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_in_process(case: Case, finished, one_parser, tmp_path, capsys):
    from pipeline.__main__ import main

    c = Ctx(tmp_path, finished)
    argv = case.argv(c)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    check(err, code, case, before, snapshot(tmp_path), tmp_path)


THROUGH_A_PROCESS = ["config-not-yaml", "checkpoint-pickled-pt", "last-ckpt-pickled"]


@pytest.mark.parametrize("case", [c for c in CASES if c.id in THROUGH_A_PROCESS], ids=THROUGH_A_PROCESS)
def test_through_the_cli(case: Case, finished, tmp_path):
    c = Ctx(tmp_path, finished)
    argv = case.argv(c)
    before = snapshot(tmp_path)
    proc = cli(*argv)
    check(proc.stderr, proc.returncode, case, before, snapshot(tmp_path), tmp_path)


def test_a_pickle_would_have_run(tmp_path):
    """The pickled cases are real: unpickling them the unsafe way does create the marker file."""
    c = Ctx(tmp_path, "")
    pickle.loads(pickle.dumps(Pwned(str(tmp_path / "PWNED"))))
    assert (tmp_path / "PWNED").exists()
    (tmp_path / "PWNED").unlink()
    torch.load(io.BytesIO(pickled(c)), weights_only=False)
    assert (tmp_path / "PWNED").exists()
