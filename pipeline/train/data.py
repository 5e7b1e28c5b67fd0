"""The student's data: shard streams for Lightning, with the training position kept in checkpoints.

Lightning stores the `state_dict()` of any training loader that has one in its checkpoints and
hands it back through `load_state_dict` on resume, after `train_dataloader()` has set the epoch.
`ResumableLoader` counts the batches it has handed out (Lightning takes no batch ahead of time
from a loader whose length it knows), so a resumed epoch continues at the next batch: none skipped,
none repeated.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from pipeline.run import rundir
from pipeline import shards
from pipeline.errors import UserError

EVAL_SPLIT = "heldout"


class ResumableLoader:
    """The training loader over a ShardStream, whose place in the epoch survives a restart.

    A torch DataLoader runs underneath only where it adds something (worker processes, pinned
    memory for the GPU); with neither, the stream is iterated directly, a few microseconds a batch
    cheaper."""

    def __init__(self, stream: shards.ShardStream, num_workers: int, pin_memory: bool):
        self.stream, self.num_workers = stream, num_workers
        self.loader = (DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
                       if num_workers or pin_memory else None)
        self.consumed = stream.resume_at

    def __len__(self) -> int:
        return len(self.stream)

    def _order_workers(self) -> int:
        return self.stream.order_workers or max(1, self.num_workers)

    def __iter__(self):
        # Fix the epoch's order before the workers get their copy of the stream.
        self.stream.order_workers = self._order_workers()
        self.consumed = self.stream.resume_at
        batches = iter(self.loader if self.loader is not None else self.stream)
        try:
            for batch in batches:
                self.consumed += 1  # counted when handed out: a checkpoint after this step includes it
                yield batch
        finally:
            shutdown = getattr(batches, "_shutdown_workers", None) or getattr(batches, "close", None)
            if shutdown is not None:
                shutdown()

    def state_dict(self) -> dict:
        s = self.stream
        return {"epoch": s.epoch, "batches": self.consumed, "batches_per_epoch": len(s),
                "order_workers": self._order_workers(), "world_size": s.world_size}

    def load_state_dict(self, state: dict) -> None:
        s = self.stream
        if state["epoch"] != s.epoch:
            if state["batches"] < state["batches_per_epoch"]:
                raise RuntimeError(f"checkpoint is in epoch {state['epoch']} but training resumes in epoch {s.epoch}")
            return  # the checkpoint closed its epoch: this one starts from its first batch
        check_resumable(state, s.world_size)
        s.resume(state["batches"], state["order_workers"])
        self.consumed = s.resume_at


def check_resumable(state: dict, world_size: int) -> None:
    """Refuse to continue an epoch on a different number of ranks: each rank's slice would change."""
    midway = 0 < state["batches"] < state["batches_per_epoch"]
    if midway and state["world_size"] != world_size:
        raise UserError(f"The checkpoint was taken midway through an epoch on {state['world_size']} rank(s); "
                        f"resume it on the same number (train.devices / train.num_workers), not {world_size}.")


class ShardDataModule(L.LightningDataModule):
    """Training batches from the train shards, validation batches from the held-out shards."""

    def __init__(self, paths: rundir.RunPaths, batch_size: int, seed: int, loader_workers: int):
        super().__init__()
        self.paths, self.batch_size, self.seed, self.loader_workers = paths, batch_size, seed, loader_workers
        self.train_manifest = shards.require_manifest(paths.split("train"))
        self.heldout_manifest = shards.load_manifest(paths.split(EVAL_SPLIT))

    def batches_per_epoch(self, world_size: int) -> int:
        return (self.train_manifest.rows // world_size) // self.batch_size

    def first_batch(self) -> dict[str, torch.Tensor]:
        """The first training batch of the run, read as rank 0 of one reads it."""
        stream = shards.ShardStream(self.paths.split("train"), self.train_manifest, self.batch_size, self.seed)
        return next(iter(stream))

    def setup(self, stage: str) -> None:
        # Runs in every DDP process, after the process group exists: each rank builds its own slice.
        rank, world = self.trainer.global_rank, self.trainer.world_size
        self.train_set = shards.ShardStream(self.paths.split("train"), self.train_manifest, self.batch_size,
                                            self.seed, rank, world)
        self.val_set = None
        if self.heldout_manifest is not None and self.heldout_manifest.rows >= world * self.batch_size:
            self.val_set = shards.ShardStream(self.paths.split(EVAL_SPLIT), self.heldout_manifest, self.batch_size,
                                              self.seed, rank, world)

    def train_dataloader(self) -> ResumableLoader:
        # Called again every epoch (reload_dataloaders_every_n_epochs=1): a new order each epoch.
        self.train_set.set_epoch(self.trainer.current_epoch)
        return ResumableLoader(self.train_set, self.loader_workers, torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=None, num_workers=self.loader_workers,
                          pin_memory=torch.cuda.is_available())
