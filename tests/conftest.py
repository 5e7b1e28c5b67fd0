"""Shared fixtures: a tiny run config, and one embedded Ray for the whole session.

Starting Ray costs seconds of several cores' time, so it is started once per test process and shared:
stages reuse an already-initialized Ray (as they would a caller's), and the CLI in a subprocess joins
it by its address (as it would a cluster's). A test whose run needs its own Ray (environment variables
that must reach the workers, a driver killed on purpose) gets a fresh embedded one, as a user's first
run on a laptop does.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest
import torch

from pipeline.kinds import check_kinds
from pipeline.config import Config, DataConfig, EvalConfig, LabelConfig, TeacherConfig, TrainConfig

# The cores shared out among the test processes (pytest-xdist's workers), each process and the
# subprocesses it starts taking one share: oversubscribed, PyTorch's threads spin and waste the cores.
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


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
    return check_kinds(cfg)  # as the command line and every stage do: the task fills what is left unset


def shared_ray():
    """The test process's embedded Ray, started on first use. A test that builds a cluster of its own
    shuts it down first (a driver joins one Ray at a time); the next use starts it again."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    return ray


@pytest.fixture(scope="module")
def ray_local():
    """The shared embedded Ray, for tests that call the stages in this process."""
    return shared_ray()


def built_once(tmp_path_factory, name: str, build) -> str:
    """The directory `name`, built by `build(out)` once for the whole test session.

    pytest-xdist's test processes share the parent of their base temporary directories: the first
    process to ask builds the run there, under a lock, and the others wait for it and reuse it, so a
    shared run costs one build, not one per process. A build that fails leaves no `.built` mark: the
    next process to ask starts again from nothing (and reports the same error). One test process
    alone builds in its own base directory."""
    import fcntl
    import shutil

    if "PYTEST_XDIST_WORKER" not in os.environ:
        out = tmp_path_factory.mktemp(name) / "out"
        build(str(out))
        return str(out)
    root = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    out, built = root / "out", root / ".built"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, and by the kernel if this process dies
        if not built.exists():
            shutil.rmtree(out, ignore_errors=True)
            build(str(out))
            built.touch()
    return str(out)


@pytest.fixture(scope="session")
def labeled_run(tmp_path_factory):
    """A run directory with a trained teacher and labeled train/held-out shards (shared, read-only),
    labeled on the shared Ray (built once per session: `built_once`)."""
    from pipeline.label.stage import run_label_stage
    from pipeline.teach.stage import run_teacher_stage

    shared_ray()

    def build(out):
        cfg = tiny_config(out)
        run_teacher_stage(cfg)
        run_label_stage(cfg)

    return tiny_config(built_once(tmp_path_factory, "labeled", build))


@pytest.fixture(scope="session")
def trained_run(labeled_run, tmp_path_factory):
    """A copy of `labeled_run` with a trained student too (shared, read-only: copy it to write into it)."""
    import shutil

    from pipeline.train.stage import run_train_stage

    def build(out):
        shutil.copytree(labeled_run.out, out)
        run_train_stage(dataclasses.replace(labeled_run, out=out))

    return dataclasses.replace(labeled_run, out=built_once(tmp_path_factory, "trained", build))


@pytest.fixture(scope="session")
def finished_run(trained_run, tmp_path_factory):
    """A copy of `trained_run` evaluated too (report.json): a finished run (shared, read-only: copy it
    to write into it)."""
    import shutil

    from pipeline.evaluate.stage import run_eval_stage

    def finished(out):
        cfg = dataclasses.replace(trained_run, out=out)
        cfg.eval = dataclasses.replace(cfg.eval, latency=False)
        return cfg

    def build(out):
        shutil.copytree(trained_run.out, out)
        run_eval_stage(finished(out))

    return finished(built_once(tmp_path_factory, "finished", build))


def cli(*args, env: dict | None = None, own_ray: bool | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` as a user runs it, in its own process session; whatever it leaves
    running is killed afterwards. It joins the shared Ray, unless `env` is given: environment variables
    for the run reach Ray's workers only from a Ray the run starts itself, so it then starts its own.
    `own_ray=False`: variables meant for the driver alone, which joins the shared Ray all the same."""
    ray_env = {"RAY_ADDRESS": ""}
    if not (env is not None if own_ray is None else own_ray):
        ray = shared_ray()
        # Ray turned token authentication on in this process's environment when it started: pass it on.
        ray_env = {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **ray_env, **(env or {})}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        try:  # e.g. the Ray processes of a driver killed on purpose
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


# The slowest files, measured (`pytest --durations=0`), slowest first: the two test processes take whole
# files in this order (pyproject's --no-loadscope-reorder), so the longest start first and the last files
# to finish are short ones. The shared runs (labeled_run ...) are built by the first process to need them.
SLOWEST_FIRST = ("test_fields.py", "test_train.py", "test_surrogate.py", "test_e2e.py", "test_native_hang.py",
                 "test_malformed.py", "test_label_faults.py", "test_multinode.py", "test_bring_your_own.py",
                 "test_promote.py", "test_output.py", "test_corrupt.py", "test_adapt.py", "test_train_resume.py",
                 "test_label_cluster.py", "test_defects_label_promote_export.py", "test_target_transforms.py",
                 "test_gate.py", "test_library.py", "test_label.py", "test_track.py", "test_sweep.py",
                 "test_evaluate.py", "test_recipes.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
