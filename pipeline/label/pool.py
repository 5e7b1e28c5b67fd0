"""The pool of labeling actors. Ray restarts a crashed actor; one that died for good is replaced here.

A call sent to an actor while Ray restarts it fails at once, without running: such a call would use
up one of its shard's attempts for nothing. So an actor that lost a call gets no work until it
answers a probe again (`lost`, `answered`). The owner kills every actor (`shutdown`) when labeling
ends, however it ends."""

from __future__ import annotations

import ray

from pipeline.config import Config
from pipeline.label.actor import Labeler
from pipeline.label.time_limit import TeacherProcessDied
from pipeline.run import rundir
from pipeline.run.ray_session import cluster_cpus, cluster_gpus
from teachers import TeacherCard

# A worker, an actor or a whole node was lost with the shard in flight, or the teacher's own process
# (label.timeout_s) crashed under an actor that lives on. The shard was not committed and is a pure
# function of its job, so doing it again is safe.
LOST_WORK = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError,
             ray.exceptions.NodeDiedError, TeacherProcessDied)


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
        # so a lost node's actors come back elsewhere. A call lost with its actor is not retried by
        # Ray: the label stage redoes the shard and counts its attempts (1 + label.max_retries in
        # all); retries in both places would multiply.
        actor_cls = ray.remote(Labeler).options(
            num_cpus=per_actor, num_gpus=num_gpus, max_restarts=-1, max_task_retries=0,
            scheduling_strategy="SPREAD",
        )
        self._start = lambda: actor_cls.remote(paths.root, card.fingerprint, cfg.label.batch_size, threads,
                                               cfg.label.bf16_on_gpu, cfg.label.top_k, input_space,
                                               cfg.task.kind, cfg.label.timeout_s)
        self.actors = [self._start() for _ in range(count)]
        self.load = [0] * count  # shards in flight per actor
        self.waiting: dict[ray.ObjectRef, int] = {}  # probe -> the actor it waits for, coming back from a loss

    def least_loaded(self, most: int) -> int | None:
        """The actor with the fewest shards in flight, if fewer than `most`, among those not coming
        back from a loss; None if there is none."""
        busy = set(self.waiting.values())
        free = [i for i in range(len(self.actors)) if i not in busy and self.load[i] < most]
        return min(free, key=self.load.__getitem__) if free else None

    def lost(self, index: int, handle, exc: ray.exceptions.RayActorError) -> None:
        """A call on `handle`, actor `index`, was lost with its actor: replace an actor that died for
        good; wait for one that Ray restarts (unlimited retries: the probe runs once it is back)."""
        if isinstance(exc, ray.exceptions.ActorDiedError):
            self.replace(index, handle)
        elif self.actors[index] is handle and index not in self.waiting.values():
            self.waiting[handle.__ray_ready__.options(max_task_retries=-1).remote()] = index

    def answered(self, probe: ray.ObjectRef) -> None:
        """A probe came back: its actor takes work again, or, if it died meanwhile, is replaced."""
        index = self.waiting.pop(probe)
        dead = self.actors[index]
        try:
            ray.get(probe)
        except ray.exceptions.RayActorError:
            self.replace(index, dead)

    def replace(self, index: int, dead) -> None:
        """Start a new actor in place of `dead`, unless an earlier failure of one of its (up to
        two) shards in flight has already replaced it."""
        if self.actors[index] is dead:
            self.actors[index] = self._start()

    def shutdown(self) -> None:
        """End every actor now (no restart), releasing its CPUs and GPUs."""
        for actor in self.actors:
            ray.kill(actor)
