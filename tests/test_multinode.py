"""A real multi-node Ray run: a head and a worker node started as separate `ray start` processes on
this machine, sharing one token (token authentication on), and `python -m pipeline run --address`
on them with two teacher actors, one per node (the label pool spreads its actors), and the student
trained by Ray Train's TorchTrainer on two workers (CPU, gloo), which, one CPU per node, can only sit
one per node. One run serves both checks: a cluster and a run cost the same whichever they look at.

The cluster lives in a Ray directory of its own (RAY_TMPDIR), so no other Ray on the machine finds
it or is found by it. Teardown ends exactly the processes of the two `ray start` sessions, by session
id: `ray stop` would end every Ray process of the machine's user, other tests' and other people's too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import psutil
import pytest
import yaml
from safetensors.torch import load_file

from pipeline import shards
from pipeline.run.rundir import RunPaths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
# The smallest run that still trains and evaluates; 4 training shards, so each actor gets some, and
# each of the two Ray Train workers reads two.
SMALL = ["--teacher.epochs", "1", "--data.shards", "4", "--data.samples_per_shard", "256", "--train.max_epochs", "1",
         "--train.preflight", "false", "--eval.latency", "false", "--train.num_workers", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_sessions(sessions: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM every process of these sessions, then SIGKILL what is left after `grace_s`."""
    def members() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in members():
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        deadline = time.monotonic() + grace_s
        while members() and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster():
    ray_tmp = tempfile.mkdtemp(prefix="dmn", dir="/tmp")  # short: Ray's socket paths are limited in length
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    sessions: list[int] = []

    def ray_start(*args: str) -> bool:
        proc = subprocess.Popen([RAY, "start", *args, "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                 f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
                                env=env, cwd=ROOT, start_new_session=True, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sessions.append(proc.pid)  # its daemons stay in the session it leads
        output, _ = proc.communicate(timeout=180)
        if proc.returncode != 0 and "already in use" not in output and "Failed to start GCS" not in output:
            raise AssertionError(output[-3000:])
        return proc.returncode == 0

    try:
        # A port found free can be taken before Ray binds it (other Rays on the machine, the other
        # test process's among them, open ports all the time): then the cluster starts again, on others.
        for _ in range(3):
            port = free_port()
            if ray_start("--head", f"--port={port}", "--include-dashboard=false", f"--dashboard-port={free_port()}",
                         f"--ray-client-server-port={free_port()}") and ray_start(f"--address=127.0.0.1:{port}"):
                break
            end_sessions(sessions)
            sessions.clear()
        else:
            pytest.fail("the two-node Ray cluster did not start on three sets of free ports")
        yield SimpleNamespace(address=f"127.0.0.1:{port}", env=env)
    finally:
        end_sessions(sessions, grace_s=2.0)  # the run is over: what has not stopped by then is killed
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_run(cluster, tmp_path_factory):
    """`run` on the two-node cluster, the driver joining it by its address as a user's would."""
    out = tmp_path_factory.mktemp("multinode") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--address", cluster.address, "--out", str(out),
         "--config", os.path.join(ROOT, "pipeline", "configs", "tiny.yaml"), "--label.actors", "2", *SMALL],
        env=cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=500, start_new_session=True,
        check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_shards_are_labeled_on_both_nodes(cluster_run):
    out, _ = cluster_run
    manifest = shards.require_manifest(RunPaths(str(out)).split("train"))
    nodes = {record.node for record in manifest.records()}
    assert len(nodes) == 2 and "" not in nodes, nodes  # the two `ray start` nodes each labeled shards
    assert (out / "report.json").exists()


def test_training_on_a_two_node_ray_cluster(cluster_run):
    out, proc = cluster_run
    assert "student trained" in proc.stdout
    paths = RunPaths(str(out))
    recorded = yaml.safe_load(open(out / "config.yaml"))
    rows = recorded["data"]["shards"] * recorded["data"]["samples_per_shard"]
    epochs, batch = recorded["train"]["max_epochs"], recorded["train"]["batch_size"]
    card = json.load(open(paths.student_card))
    # Each of the two workers read half the shards: half the steps of a one-process epoch.
    assert card["steps"] == epochs * ((rows // 2) // batch)
    assert card["epochs"] == epochs and card["train_agreement"] is not None
    assert set(load_file(paths.student_weights)) and (out / "student" / "student.onnx").exists()
    assert (out / "student" / "checkpoints" / "last.ckpt").exists()
