"""The student's data: shard streams for Lightning, with the training position kept in checkpoints.

Lightning stores the `state_dict()` of any training loader that has one in its checkpoints and
hands it back through `load_state_dict` on resume, after `train_dataloader()` has set the epoch.
`ResumableLoader` counts the batches it has handed out (Lightning takes no batch ahead of time
from a loader whose length it knows), so a resumed epoch continues at the next batch: none skipped,
none repeated.
"""

from __future__ import annotations

import itertools
import logging
import os

import lightning as L
import torch
from torch.utils.data import DataLoader

from pipeline.run import rundir
from pipeline import shards
from pipeline.errors import UserError

EVAL_SPLIT = "heldout"
log = logging.getLogger(__name__)
# Optimizer steps per call of the module's training_step (at most; see steps_per_call). Not a
# setting of its own: a run resumed mid-epoch must continue with the lists it was cut into.
STEPS_PER_CALL = 16


class ResumableLoader:
    """The training loader over a ShardStream, whose place in the epoch survives a restart.

    It hands out lists of up to `steps_per_call` consecutive batches: the module takes one
    optimizer step per batch (students/module.py), so Lightning's per-call cost is shared by them.
    A torch DataLoader runs underneath only where it adds something (worker processes, pinned
    memory for the GPU); with neither, the stream is iterated directly, a few microseconds a batch
    cheaper."""

    def __init__(self, stream: shards.ShardStream, num_workers: int, pin_memory: bool,
                 steps_per_call: int = STEPS_PER_CALL):
        self.stream, self.num_workers, self.steps_per_call = stream, num_workers, steps_per_call
        self.loader = (DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
                       if num_workers or pin_memory else None)
        self.consumed = stream.resume_at

    def __len__(self) -> int:
        """Lists an epoch holds. A resumed epoch continues from a list boundary (checkpoints are taken
        between lists), so the lists before the checkpoint and those after add up to this."""
        return -(-len(self.stream) // self.steps_per_call)

    def _order_workers(self) -> int:
        return self.stream.order_workers or max(1, self.num_workers)

    def __iter__(self):
        # Fix the epoch's order before the workers get their copy of the stream.
        self.stream.order_workers = self._order_workers()
        self.consumed = self.stream.resume_at
        batches = iter(self.loader if self.loader is not None else self.stream)
        try:
            while chunk := list(itertools.islice(batches, self.steps_per_call)):
                self.consumed += len(chunk)  # counted when handed out: a checkpoint after these steps includes them
                yield chunk
        finally:
            # An epoch left early (stopped, failed) must not keep its loader's worker processes or
            # open shards until garbage collection: a stream's generator is closed now, and a
            # DataLoader's iterator shuts its workers down when its last reference goes, here.
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            del batches

    def state_dict(self) -> dict:
        s = self.stream
        return {"epoch": s.epoch, "batches": self.consumed, "batches_per_epoch": len(s),
                "order_workers": self._order_workers(), "world_size": s.world_size,
                "steps_per_call": self.steps_per_call}

    def load_state_dict(self, state: dict) -> None:
        s = self.stream
        if state["epoch"] != s.epoch:
            if state["batches"] < state["batches_per_epoch"]:
                raise RuntimeError(f"checkpoint is in epoch {state['epoch']} but training resumes in epoch {s.epoch}")
            return  # the checkpoint closed its epoch: this one starts from its first batch
        check_resumable(state, s.world_size, self.steps_per_call)
        s.resume(state["batches"], state["order_workers"])
        self.consumed = s.resume_at


def check_resumable(state: dict, world_size: int, steps_per_call: int) -> None:
    """Refuse to continue an epoch on a different number of ranks (each rank's slice would change)
    or cut into lists of another length (Lightning counts the epoch's lists)."""
    midway = 0 < state["batches"] < state["batches_per_epoch"]
    if midway and state["world_size"] != world_size:
        raise UserError(f"The checkpoint was taken midway through an epoch on {state['world_size']} rank(s); "
                        f"resume it on the same number (train.devices / train.num_workers), not {world_size}.")
    saved = state.get("steps_per_call", 1)
    if midway and saved != steps_per_call:
        raise UserError("The checkpoint was taken midway through an epoch of a run with another "
                        "train.checkpoint_every_steps; resume it with the interrupted run's setting.")


def steps_per_call(checkpoint_every_steps: int) -> int:
    """Optimizer steps per training_step call: STEPS_PER_CALL, fewer where checkpoints are more
    frequent, so that a checkpoint falls on every multiple of checkpoint_every_steps in an epoch."""
    return min(STEPS_PER_CALL, checkpoint_every_steps) if checkpoint_every_steps > 0 else STEPS_PER_CALL


# Where the memory limit of the container this process runs in is read; a module constant so that
# tests can point it at a fake one. cgroup v2 first, then v1.
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_LIMIT_FILES = ("memory.max", "memory/memory.limit_in_bytes")
# Bytes. cgroup v1 reports "no limit" as a number near 2**63 (v2 writes "max"): any limit this
# large means none.
NO_LIMIT = 1 << 60


def container_memory_limit(cgroup_root: str | None = None) -> int | None:
    """The memory limit, in bytes, of this process's container (its cgroup), or None where there
    is none or it cannot be read."""
    root = CGROUP_ROOT if cgroup_root is None else cgroup_root
    for name in CGROUP_LIMIT_FILES:
        try:
            with open(os.path.join(root, name)) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            continue
        return limit if 0 < limit < NO_LIMIT else None
    return None


def machine_memory(cgroup_root: str | None = None) -> int:
    """Bytes of memory this process's machine has: its physical memory, or its container's limit
    where that is lower (a container is killed at its limit, however much the host has)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = container_memory_limit(cgroup_root)
    return physical if limit is None else min(physical, limit)


def memory_budget(budget_mb: int | None, processes: int = 1, cgroup_root: str | None = None) -> int:
    """Bytes of training data one of the `processes` training processes on this machine may hold
    in memory: an equal share of `budget_mb` MiB, or of a quarter of the machine's memory (each
    process reads its own copy of the splits)."""
    total = budget_mb << 20 if budget_mb is not None else machine_memory(cgroup_root) // 4
    return total // max(1, processes)


class ShardDataModule(L.LightningDataModule):
    """Training batches from the train shards, validation batches from the held-out shards.

    Splits that fit in `memory_budget_mb` (for all ranks on this machine together) are read once
    into tensors (onto the GPU when training there) and batched by index; larger ones stream from
    the shards with flat memory. Both give the same batches in the same order.

    `processes_here`: the training processes on this machine that share the budget (Ray Train
    workers on this node); None: the trainer's devices, the DDP ranks it starts here."""

    def __init__(self, paths: rundir.RunPaths, batch_size: int, seed: int, loader_workers: int,
                 steps_per_call: int = STEPS_PER_CALL, memory_budget_mb: int | None = None,
                 processes_here: int | None = None):
        super().__init__()
        self.paths, self.batch_size, self.seed, self.loader_workers = paths, batch_size, seed, loader_workers
        self.steps_per_call, self.memory_budget_mb = steps_per_call, memory_budget_mb
        self.processes_here = processes_here
        self.train_manifest = shards.require_manifest(paths.split("train"))
        self.heldout_manifest = shards.load_manifest(paths.split(EVAL_SPLIT))
        if self.heldout_manifest is not None:  # refused here, not after epochs of training
            shards.check_split(paths.split(EVAL_SPLIT), self.heldout_manifest)
        self.in_memory = False

    def batches_per_epoch(self, world_size: int) -> int:
        return (self.train_manifest.rows // world_size) // self.batch_size

    def first_batch(self) -> dict[str, torch.Tensor]:
        """The first training batch of the run, read as rank 0 of one reads it."""
        stream = shards.ShardStream(self.paths.split("train"), self.train_manifest, self.batch_size, self.seed)
        return next(iter(stream))

    def fits_in_memory(self, ranks_here: int) -> bool:
        """Whether this process's share of the budget, among `ranks_here` training processes on
        this machine, holds the training and held-out splits."""
        manifests = [m for m in (self.train_manifest, self.heldout_manifest) if m is not None]
        needed = sum(shards.split_bytes(m, shards.reader.default_columns(m)) for m in manifests)
        return needed <= memory_budget(self.memory_budget_mb, ranks_here)

    def _stream(self, split: str, manifest: shards.Manifest, rank: int, world: int) -> shards.ShardStream:
        args = (self.paths.split(split), manifest, self.batch_size, self.seed, rank, world)
        if not self.in_memory:
            return shards.ShardStream(*args)
        stream = shards.MemoryStream(*args)
        device = self.trainer.strategy.root_device
        return stream.to(device) if device.type == "cuda" else stream

    def setup(self, stage: str) -> None:
        # Runs in every DDP process, after the process group exists: each rank builds its own slice.
        rank, world = self.trainer.global_rank, self.trainer.world_size
        self.in_memory = self.fits_in_memory(self.processes_here or self.trainer.num_devices)
        if rank == 0:
            log.info("Training data: %s.", "read once into memory" if self.in_memory else
                     "streamed from the shards (larger than train.memory_budget_mb)")
        self.train_set = self._stream("train", self.train_manifest, rank, world)
        self.val_set = None
        if self.heldout_manifest is not None and self.heldout_manifest.rows >= world * self.batch_size:
            self.val_set = self._stream(EVAL_SPLIT, self.heldout_manifest, rank, world)

    def train_dataloader(self) -> ResumableLoader:
        # Called again every epoch (reload_dataloaders_every_n_epochs=1): a new order each epoch.
        self.train_set.set_epoch(self.trainer.current_epoch)
        workers = 0 if self.in_memory else self.loader_workers
        pin = torch.cuda.is_available() and not self.in_memory
        return ResumableLoader(self.train_set, workers, pin, self.steps_per_call)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        if self.in_memory:
            return DataLoader(self.val_set, batch_size=None)
        return DataLoader(self.val_set, batch_size=None, num_workers=self.loader_workers,
                          pin_memory=torch.cuda.is_available())
