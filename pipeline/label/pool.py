"""The pool of labeling actors. Ray restarts a crashed actor; one that died for good is replaced here."""

from __future__ import annotations

import ray

from pipeline.config import Config
from pipeline.label.actor import Labeler
from pipeline.run import rundir
from pipeline.run.ray_session import cluster_cpus, cluster_gpus
from teachers import TeacherCard

# A worker, an actor or a whole node was lost with the shard in flight. The shard was not committed
# and is a pure function of its job, so doing it again is safe.
LOST_WORK = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError,
             ray.exceptions.NodeDiedError)


class LabelerPool:
    def __init__(self, cfg: Config, paths: rundir.RunPaths, card: TeacherCard, input_space: str):
        """Actors on CPU nodes split the cores (`label.cpus_per_actor` each); on GPU nodes one per GPU."""
        gpus = cluster_gpus()
        num_gpus = cfg.label.num_gpus if cfg.label.num_gpus is not None else (1 if gpus else 0)
        cpus = cluster_cpus()
        per_actor = cfg.label.cpus_per_actor
        # On CPU, one actor per label.cpus_per_actor cores (default: one per core), each running its
        # batches on that many threads and making its own inputs (pipeline/label/generation.py).
        # Single-threaded actors side by side keep every core busy, through the generating and
        # writing too, where one multi-threaded actor loses time to each parallel op's barrier.
        self.on_cpu = not num_gpus
        count = cfg.label.actors or (max(1, int(gpus / num_gpus)) if num_gpus else max(1, int(cpus // per_actor)))
        threads = 1 if num_gpus else max(1, int(cpus // count))
        # SPREAD: on a cluster, one teacher per node before two on any node. Restarts are unlimited
        # so a lost node's actors come back elsewhere; each call is retried a bounded number of times.
        actor_cls = ray.remote(Labeler).options(
            num_cpus=per_actor, num_gpus=num_gpus, max_restarts=-1, max_task_retries=cfg.label.max_retries,
            scheduling_strategy="SPREAD",
        )
        self._start = lambda: actor_cls.remote(paths.root, card.fingerprint, cfg.label.batch_size, threads,
                                               cfg.label.bf16_on_gpu, cfg.label.top_k, input_space,
                                               cfg.task.kind, cfg.label.timeout_s)
        self.actors = [self._start() for _ in range(count)]
        self.load = [0] * count  # shards in flight per actor

    def least_loaded(self) -> int:
        return min(range(len(self.actors)), key=self.load.__getitem__)

    def replace(self, index: int, dead) -> None:
        """Start a new actor in place of `dead`, unless an earlier failure of one of its (up to
        two) shards in flight has already replaced it."""
        if self.actors[index] is dead:
            self.actors[index] = self._start()

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
