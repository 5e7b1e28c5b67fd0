"""Multi-node training: Ray Train's TorchTrainer on a local two-node Ray cluster (CPU, gloo)."""

import json
import shutil
import subprocess
import sys

from safetensors.torch import load_file

from pipeline.run.rundir import RunPaths

# Two Ray nodes of one CPU each: Ray Train's two workers (one CPU each) can only sit one per node.
# The driver (the CLI, as a user would run it) joins the cluster by its address.
CLUSTER_RUN = """
import os, subprocess, sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
try:
    proc = subprocess.run([sys.executable, "-m", "pipeline", "train", "--out", sys.argv[1],
                           "--address", cluster.address, "--train.num_workers", "2"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    sys.exit(proc.returncode)
finally:
    cluster.shutdown()
"""


def test_training_on_a_two_node_ray_cluster(labeled_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(labeled_run.out, out)
    proc = subprocess.run([sys.executable, "-c", CLUSTER_RUN, str(out)], capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "student trained" in proc.stdout
    paths = RunPaths(str(out))
    card = json.load(open(paths.student_card))
    rows = labeled_run.data.shards * labeled_run.data.samples_per_shard
    # Each of the two workers read half the shards: half the steps of a one-process epoch.
    assert card["steps"] == labeled_run.train.max_epochs * ((rows // 2) // labeled_run.train.batch_size)
    assert card["epochs"] == labeled_run.train.max_epochs and card["train_agreement"] is not None
    assert set(load_file(paths.student_weights)) and (out / "student" / "student.onnx").exists()
    assert (out / "student" / "checkpoints" / "last.ckpt").exists()
