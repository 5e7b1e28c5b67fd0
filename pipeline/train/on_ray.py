"""Training across a Ray cluster: Ray Train's TorchTrainer runs the stage's Lightning fit on
`train.num_workers` workers (one process and one device each), wherever the cluster has room.

Each worker builds the same module (same seed), the same data module (each reads its own slice of
the shards, by its global rank) and the stage's Trainer with Ray's DDP strategy and cluster
environment. Checkpoints and the trained weights go to the run directory, which a cluster must
share anyway (s3://, gs://, NFS), so resuming works as on one machine. A worker that fails fails
the run (no silent retries that would restart from scratch): rerun with --resume.
"""

from __future__ import annotations

import json
import os
import tempfile

from pipeline.run import rundir, storage
from pipeline.train import faults as train_faults
from pipeline.config import Config
from pipeline.run.ray_session import cluster_gpus, ray_session
from pipeline.train.data import ShardDataModule, steps_per_call
from pipeline.train.student import save_weights
from pipeline.train.trainer import DDP_TIMEOUT, build_module, make_trainer, output_scale

METRICS = "metrics.json"


def _train_loop(config: dict) -> None:
    """One Ray Train worker: Lightning with Ray's DDP strategy."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer


    cfg, paths, student_dir, ckpt_path = config["cfg"], config["paths"], config["student_dir"], config["ckpt_path"]
    # The node's memory budget is shared by the Ray Train workers on it, whatever the trainer's
    # own device count (one per worker).
    data = ShardDataModule(paths, cfg.train.batch_size, cfg.train.seed, ray_loader_workers(cfg),
                           steps_per_call(cfg.train.checkpoint_every_steps), cfg.train.memory_budget_mb,
                           processes_here=ray.train.get_context().get_local_world_size())
    scale = output_scale(cfg, paths.split("train"), data.train_manifest)
    module = build_module(cfg, data.train_manifest, data.batches_per_epoch(cfg.train.num_workers), scale)
    trainer = prepare_trainer(make_trainer(cfg, student_dir, strategy=RayDDPStrategy(), devices="auto",
                                           plugins=[RayLightningEnvironment()]))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.global_rank != 0:
        ray.train.report(metrics)
        return
    save_weights(module.student, student_dir)
    # Ray hands the driver the metrics of the last checkpoint reported; this one holds just them.
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, METRICS), "w") as f:
            json.dump(metrics, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def ray_loader_workers(cfg: Config) -> int:
    """Loader processes per Ray Train worker: as set, else none (each worker asks Ray for one CPU
    plus one per loader process, so a node's CPUs are never promised twice)."""
    return cfg.train.loader_workers or 0


def _storage_path(student_dir: str) -> str:
    """Where Ray Train keeps its own run records: beside the checkpoints, on the shared storage."""
    path = storage.join(student_dir, "ray")
    return storage.local_path(path) or path


def fit_on_ray(cfg: Config, paths: rundir.RunPaths, student_dir: str, ckpt_path: str | None) -> dict[str, float]:
    """Train on the Ray cluster (cfg.address / RAY_ADDRESS, else an embedded local Ray); the weights
    land in `student_dir`. Returns rank 0's final metrics."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    with ray_session(cfg.address, cfg.code_dir):
        use_gpu = cfg.train.accelerator in ("gpu", "cuda") or (cfg.train.accelerator == "auto" and cluster_gpus() > 0)
        fault = os.environ.get(train_faults.TRAIN_FAULT)
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"cfg": cfg, "paths": paths, "student_dir": student_dir, "ckpt_path": ckpt_path},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo", timeout_s=int(DDP_TIMEOUT.total_seconds())),
            scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": 1 + ray_loader_workers(cfg),
                                                               **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(name="train", storage_path=_storage_path(student_dir),
                                 failure_config=FailureConfig(max_failures=0),
                                 worker_runtime_env={"env_vars": {train_faults.TRAIN_FAULT: fault}} if fault else None),
        )
        result = trainer.fit()
    if result.error is not None:
        raise result.error
    with result.checkpoint.as_directory() as directory:
        with open(os.path.join(directory, METRICS)) as f:
            return json.load(f)

