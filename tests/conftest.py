"""Shared fixtures: a tiny run config, and one embedded Ray for the whole session.

Stages reuse an already-initialized Ray (as they would a caller's), so in-process tests pay Ray's
start-up once; tests that go through the CLI in a subprocess start their own.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest
import torch

from pipeline.config import Config, DataConfig, EvalConfig, LabelConfig, TeacherConfig, TrainConfig

# Keep each test process from oversubscribing the (few) cores of a CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_config(out, **sections) -> Config:
    """A config that runs every stage in seconds. `sections` replace fields: data={"shards": 2}."""
    cfg = Config(
        out=str(out),
        teacher=TeacherConfig(width=8, epochs=2),
        data=DataConfig(shards=3, samples_per_shard=256, heldout_shards=1, row_group_size=64),
        label=LabelConfig(batch_size=128, actors=1),
        train=TrainConfig(max_epochs=2, batch_size=64, loader_workers=0),
        eval=EvalConfig(batch_size=512),
    )
    for name, values in sections.items():
        setattr(cfg, name, dataclasses.replace(getattr(cfg, name), **values))
    return cfg


@pytest.fixture(scope="module")
def ray_local():
    """An embedded Ray for one test module (modules that build their own cluster need none running)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def labeled_run(tmp_path_factory):
    """A run directory with a trained teacher and labeled train/held-out shards (shared, read-only).
    Labeling uses the module's Ray if one is up, else an embedded Ray that it shuts down after."""
    from pipeline.label.stage import run_label_stage
    from pipeline.teach.stage import run_teacher_stage

    cfg = tiny_config(tmp_path_factory.mktemp("run") / "out")
    run_teacher_stage(cfg)
    run_label_stage(cfg)
    return cfg


@pytest.fixture(scope="session")
def trained_run(labeled_run, tmp_path_factory):
    """A copy of `labeled_run` with a trained student too (shared, read-only: copy it to write into it)."""
    import shutil

    from pipeline.train.stage import run_train_stage

    out = tmp_path_factory.mktemp("trained") / "out"
    shutil.copytree(labeled_run.out, out)
    cfg = dataclasses.replace(labeled_run, out=str(out))
    run_train_stage(cfg)
    return cfg


@pytest.fixture(scope="session")
def finished_run(trained_run, tmp_path_factory):
    """A copy of `trained_run` evaluated too (report.json): a finished run (shared, read-only: copy it
    to write into it)."""
    import shutil

    from pipeline.evaluate.stage import run_eval_stage

    out = tmp_path_factory.mktemp("finished") / "out"
    shutil.copytree(trained_run.out, out)
    cfg = dataclasses.replace(trained_run, out=str(out))
    cfg.eval = dataclasses.replace(cfg.eval, latency=False)
    run_eval_stage(cfg)
    return cfg


def cli(*args, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` as a user runs it: its own process session (on the embedded Ray,
    whatever RAY_ADDRESS the shell has), and whatever it leaves running is killed afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "RAY_ADDRESS": "", **(env or {})}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        try:  # e.g. the Ray processes of a driver killed on purpose
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
