"""Labeling on a multi-node Ray cluster, simulated on this machine with ray.cluster_utils.Cluster."""

import shutil
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from pipeline.run import rundir
from pipeline import shards
from pipeline.label.stage import run_label_stage
from pipeline.run.rundir import RunPaths
from tests.conftest import tiny_config


@pytest.fixture
def cluster():
    if ray.is_initialized():  # a module-scoped embedded Ray of an earlier module
        ray.shutdown()
    # The head takes no labeling work: the worker nodes do it, as on a real cluster.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    yield c
    ray.shutdown()
    c.shutdown()


def run_with_teacher(tmp_path, labeled_run, **data):
    cfg = tiny_config(tmp_path / "run", data=data, label={"actors": 2, "batch_size": 64})
    shutil.copytree(f"{labeled_run.out}/teacher", f"{cfg.out}/teacher")
    rundir.record(cfg)
    return cfg


def test_a_node_lost_mid_run_does_not_stop_the_run(tmp_path, labeled_run, cluster):
    keep = cluster.add_node(num_cpus=2)
    lose = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    cfg = run_with_teacher(tmp_path, labeled_run, shards=24, samples_per_shard=512)
    split_dir = RunPaths(cfg.out).split("train")
    outcome = {}

    def label():
        try:
            outcome["result"] = run_label_stage(cfg)
        except BaseException as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=label)
    thread.start()
    # Wait for the first committed shards, then pull the plug on one worker node (not gracefully).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        manifest = shards.load_manifest(split_dir)
        if manifest is not None and manifest.shards:
            break
        time.sleep(0.1)
    committed_at_loss = len(manifest.shards) if manifest else 0
    cluster.remove_node(lose, allow_graceful=False)
    thread.join(timeout=150)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    assert 0 < committed_at_loss < cfg.data.shards, "the node was not lost mid-run"
    manifest = shards.require_manifest(split_dir)
    assert manifest.rows == cfg.data.shards * cfg.data.samples_per_shard
    nodes = {r.node for r in manifest.records()}
    assert nodes >= {keep.node_id}
    # The head (no CPUs) took no labeling work. That both nodes of a cluster label shards, test_multinode sees.
    assert ray.get_runtime_context().get_node_id() not in nodes
