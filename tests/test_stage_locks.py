"""Every stage called from Python takes its run directory's lock, as the command line does: a
second writer on the same DIR stops at once with one sentence, before reading or writing anything."""

from __future__ import annotations

import fcntl
import os

import pytest

from pipeline.adapt.loop import run_adapt
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.evaluate.stage import run_eval_stage
from pipeline.label.stage import run_label_stage
from pipeline.run.lock import LOCK_NAME
from pipeline.sweep.stage import run_sweep
from pipeline.teach.stage import run_teacher_stage
from pipeline.train.stage import run_train_stage

STAGES = [run_teacher_stage, run_label_stage, run_train_stage, run_eval_stage, run_adapt, run_sweep]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.__name__)
def test_a_stage_called_from_python_refuses_a_directory_another_writer_holds(tmp_path, stage):
    out = tmp_path / "run"
    out.mkdir()
    # Another writer: an exclusive flock on DIR/.lock through a descriptor of its own (as another process holds it).
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"pid 1 on elsewhere\n", 0)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(UserError, match=r"is in use by another run \(pid 1 on elsewhere\)"):
            stage(Config(out=str(out)))
    finally:
        os.close(fd)
    assert sorted(os.listdir(out)) == [LOCK_NAME], "the refused stage wrote nothing"
