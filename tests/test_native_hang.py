"""A teacher that hangs in native code: label.timeout_s stops the batch, its rows are rejected and counted,
and labeling goes on (pipeline/label/time_limit.py).

The hang is a real one in C that no signal ends: the teacher locks a mutex that its thread already holds
(a default glibc mutex then waits forever, restarting its wait after any signal handler) through
`ctypes.PyDLL`, which keeps the GIL, so no Python thread of that process runs either. (`ctypes` calling
libc `sleep` would not do: SIGALRM ends a `sleep` early, and the SIGALRM time limit alone stops it.)
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pipeline.label.time_limit import BatchFailed, BatchTimeout, ReloadFailed, TeacherProcess, TeacherProcessDied
from tests import hanging_teachers as teachers
from tests.conftest import cli
from tests.test_surrogate import TINY

TIMEOUT_S = 2.0
LOW, HIGH = 1.0, 1.008  # k in [LOW, HIGH): a few points of the box, so a few batches of 16 hang

HANGING = '''
import ctypes

import numpy as np

TIMES = np.linspace(0.0, 1.0, 8)
LOG = {log!r}


def deadlock(x):
    """Note the batch, then block in C for good: no signal, and no other Python thread, can end this."""
    with open(LOG, "a") as f:
        f.write(" ".join(map(repr, x[:, 0].tolist())) + "\\n")
    libc = ctypes.PyDLL(None)  # PyDLL: the GIL stays held for the call
    mutex = ctypes.create_string_buffer(64)  # zeros: PTHREAD_MUTEX_INITIALIZER, a default (normal) mutex
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # its own lock: waits forever


class Hangs:
    """u(t) = A exp(-k t), except on a batch holding a point with k in [{low}, {high}): a solver stuck in C."""

    version = "hangs-1"

    def __call__(self, x):
        if ((x[:, 0] >= {low}) & (x[:, 0] < {high})).any():
            deadlock(x)
        return x[:, 1:2] * np.exp(-x[:, 0:1] * TIMES)


def always(x):
    """Stuck in C on every batch of labeling (the teacher stage's probe of 2 seed inputs passes)."""
    if len(x) > 2:
        deadlock(x)
    return np.zeros((len(x), 8), np.float32)
'''


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    root = tmp_path_factory.mktemp("hanging")
    log = root / "hangs.log"
    (root / "hanging.py").write_text(textwrap.dedent(HANGING.format(log=str(log), low=LOW, high=HIGH)))
    return root, log


def hung_batches(log) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in log.read_text().splitlines()] if log.exists() else []


def test_a_batch_blocked_in_c_is_stopped_its_rows_rejected_and_labeling_goes_on(code, tmp_path):
    root, log = code
    out = tmp_path / "run"
    proc = cli("run", "--out", str(out), "--code_dir", str(root), "--teacher.arch", "hanging:Hangs", *TINY,
               "--label.timeout_s", str(TIMEOUT_S), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    hung = hung_batches(log)
    assert hung and all(any(LOW <= k < HIGH for k in batch) for batch in hung), hung
    assert all(len(batch) == 16 for batch in hung)  # whole batches of label.batch_size
    report = json.load(open(out / "report.json"))
    rejected = report["rejected_rows"]
    assert rejected["train"] + rejected["heldout"] == 16 * len(hung)  # exactly the rows of the batches that hung
    for split, planned in (("train", 512), ("heldout", 256)):
        manifest = json.load(open(out / "shards" / split / "manifest.json"))
        assert report["regression"][split]["samples"] + rejected[split] == planned
        assert sum(s["rejected"] for s in manifest["shards"]) == rejected[split]
        if rejected[split]:
            assert "did not return within label.timeout_s = 2 s" in report["first_errors"][split]
    assert "first teacher failure in train: BatchTimeout" in proc.stdout or not rejected["train"]

    # No kept row holds a point that hangs: every such batch was rejected, none was labeled.
    import pyarrow.parquet as pq

    for split in ("train", "heldout"):
        manifest = json.load(open(out / "shards" / split / "manifest.json"))
        for shard in manifest["shards"]:
            table = pq.read_table(out / "shards" / split / shard["path"])
            k = np.frombuffer(b"".join(table.column("input").to_pylist()), np.float32).reshape(-1, 2)[:, 0]
            assert not ((k >= LOW) & (k < HIGH)).any()

    # The bar: each hung batch cost at most 2 x label.timeout_s of the teacher's time (its wait, the kill,
    # and a new teacher process), and the analytic batches next to nothing; each hang is forever otherwise.
    teacher_s = sum(s["teacher_seconds"] for split in ("train", "heldout")
                    for s in json.load(open(out / "shards" / split / "manifest.json"))["shards"])
    assert teacher_s <= len(hung) * 2 * TIMEOUT_S, (teacher_s, len(hung))
    label_s = sum(json.load(open(out / "shards" / split / "manifest.json"))["label_seconds"]
                  for split in ("train", "heldout"))
    assert label_s < 60, label_s  # the whole stage, while a single hang would last forever


def test_a_teacher_stuck_in_c_on_every_batch_stops_the_run_with_one_sentence(code, tmp_path):
    root, _ = code
    out = tmp_path / "run"
    proc = cli("run", "--out", str(out), "--code_dir", str(root), "--teacher.arch", "hanging:always", *TINY,
               "--data.shards", "1", "--data.samples_per_shard", "32", "--label.timeout_s", "1", timeout=180)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "failed on every batch of 32 generated inputs" in lines[0]
    assert "did not return within label.timeout_s = 1 s" in lines[0]


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_teacher_process_survives_every_way_a_batch_can_fail():
    """In the process alone (no Ray): a Python hang ends by SIGALRM in the same process; a hang in C ends by
    killing it, and the next batch gets a new one; a raise is reported; a crash is lost work."""
    process = TeacherProcess(teachers.load, 1.0)
    try:
        first = process.info["pid"]
        assert process(np.array([teachers.LABEL, 7.0])).tolist() == [0, 14]
        with pytest.raises(BatchFailed, match="^BatchTimeout: the batch took longer than label.timeout_s = 1 s"):
            process(np.array([teachers.PYTHON_HANG]))
        assert process(np.array([teachers.PID]))[0] == first and process.restarts == 0

        started = time.perf_counter()
        with pytest.raises(BatchTimeout, match="did not return within label.timeout_s = 1 s"):
            process(np.array([teachers.NATIVE_HANG]))
        second = process(np.array([teachers.PID]))[0]  # a new process, forked and loaded
        assert time.perf_counter() - started < 2 * 1.0  # the bar: the hung batch, the kill and the new process
        assert second != first and not alive(first) and process.restarts == 1

        with pytest.raises(BatchFailed, match="^FloatingPointError: the solver diverged$"):
            process(np.array([teachers.RAISE]))
        with pytest.raises(TeacherProcessDied, match="died while labeling a batch"):
            process(np.array([teachers.CRASH]))
        assert process(np.array([teachers.LABEL, 1.0])).tolist() == [0, 2]
    finally:
        process.close()


def test_a_teacher_that_fails_to_load_raises_from_the_constructor_or_the_call_that_needed_it(tmp_path):
    with pytest.raises(RuntimeError, match="license server unreachable"):
        TeacherProcess(teachers.broken_load, 1.0)
    process = TeacherProcess(functools.partial(teachers.load_once, str(tmp_path / "loaded")), 1.0)
    try:
        with pytest.raises(TeacherProcessDied):
            process(np.array([teachers.CRASH]))
        with pytest.raises(ReloadFailed, match="could not load the teacher: RuntimeError: loaded once already"):
            process(np.array([teachers.LABEL]))
    finally:
        process.close()


def test_teacher_processes_end_with_their_owner():
    """An owner that dies without cleaning up (a labeling actor killed by ray.kill) leaves nothing behind."""
    script = ("import os, sys; from pipeline.label.time_limit import TeacherProcess; "
              "from tests import hanging_teachers as t; p = TeacherProcess(t.load, 1.0); "
              "print(p._zygote[0].pid, p.info['pid'], flush=True); os._exit(0)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2, proc.stderr[-2000:]
    deadline = time.monotonic() + 10
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(alive, pids)), pids
