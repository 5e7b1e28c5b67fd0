"""Training checkpoints: written atomically, read without unpickling, found again on --resume.

Lightning writes checkpoints through a CheckpointIO plugin; this one goes through
`pipeline.storage`, so a checkpoint is complete or absent (temporary name, then rename) and may
live on any storage the run directory does (s3://, gs://, file://). Loading uses
`torch.load(weights_only=True)`: a checkpoint holds tensors and plain data only, never code.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import CheckpointIO

from pipeline.run import storage
from pipeline.errors import UserError
from pipeline.train.data import check_resumable

log = logging.getLogger(__name__)

LAST = "last.ckpt"  # the newest checkpoint, replaced atomically by each new one


class AtomicCheckpointIO(CheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        storage.write_bytes_atomic(str(path), buffer.getvalue())

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> dict:
        return read_checkpoint(str(path), map_location)

    def remove_checkpoint(self, path) -> None:
        if storage.exists(str(path)):
            fs, p = storage.resolve(str(path))
            fs.delete_file(p)


class LastCheckpoint(ModelCheckpoint):
    """DIR/checkpoints/last.ckpt whenever training has passed another multiple of `every_steps`
    optimizer steps (0: at the end of every epoch instead).

    A training_step call takes several optimizer steps (pipeline/train/data.py), so the step
    count jumps; a checkpoint is due when it crosses a multiple, not only when it lands on one,
    which ModelCheckpoint's every_n_train_steps does not do. So the ModelCheckpoint underneath is
    configured to save nothing itself (no top-k, no last, no epoch trigger), its training hooks are
    replaced rather than extended, and checkpoints go through the public trainer.save_checkpoint.
    It stays a ModelCheckpoint so that Lightning adds no default checkpoint callback of its own and
    runs this one after the other callbacks (the stopping rule's state is saved as of the same step)."""

    def __init__(self, dirpath: str, every_steps: int):
        super().__init__(dirpath=dirpath, save_last=False, save_top_k=0, every_n_epochs=0)
        self.every_steps = every_steps
        self.path = storage.join(dirpath, LAST)  # where resume_point looks (Lightning's dirpath may be resolved)
        self.saved_step = 0  # optimizer steps at the last checkpoint written or resumed from

    def on_train_start(self, trainer, pl_module) -> None:
        self.saved_step = trainer.global_step  # a resumed run has its checkpoint already

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        n, step = self.every_steps, trainer.global_step
        if n >= 1 and step // n > self.saved_step // n:
            self._write_last(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # After the epoch's validation and the stopping rule's update, so both are in the checkpoint.
        if self.every_steps < 1 and trainer.global_step != self.saved_step:
            self._write_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        # The finished state too (as Lightning's save_last did): steps since the last multiple are
        # not lost, and a run that stopped early keeps the stopping rule's verdict with it.
        if trainer.global_step != self.saved_step:
            self._write_last(trainer)

    def _write_last(self, trainer) -> None:
        if trainer.fast_dev_run:  # Lightning's smoke-test mode writes no checkpoints
            return
        self.last_model_path = self.path  # set first: it is part of the checkpoint's callback state
        # Every rank calls it (it synchronises them); the strategy has global rank 0 write.
        trainer.save_checkpoint(self.path)
        self.saved_step = trainer.global_step


def read_checkpoint(path: str, map_location: Optional[Any] = None) -> dict:
    data = storage.read_bytes(path)
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location=map_location or "cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only refusals all land here
        raise UserError(f"{path} cannot be read as a training checkpoint ({type(exc).__name__}); "
                        "delete it to start the training over.") from exc
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} holds a {type(checkpoint).__name__}, not a training checkpoint; "
                        "delete it to start the training over.")
    return checkpoint


def checkpoint_dir(student_dir: str) -> str:
    return storage.join(student_dir, "checkpoints")


def last_checkpoint(student_dir: str) -> str:
    return storage.join(checkpoint_dir(student_dir), LAST)


@dataclass
class ResumePoint:
    path: str
    epoch: int  # epochs finished before the checkpoint's epoch
    step: int  # optimizer steps taken


def resume_point(student_dir: str, resume: bool, world_size: int, steps_per_call: int) -> Optional[ResumePoint]:
    """The checkpoint to continue from, or None to start afresh.

    A checkpoint left by an interrupted run is never silently dropped: without `resume` it is an
    error that says how to continue or start over."""
    path = last_checkpoint(student_dir)
    if not storage.exists(path):
        if resume:
            log.warning("Nothing to resume in %s: training starts from the beginning.", checkpoint_dir(student_dir))
        return None
    checkpoint = read_checkpoint(path)
    point = ResumePoint(path, int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))
    if not resume:
        raise UserError(f"{path} holds an interrupted training run (epoch {point.epoch + 1}, step {point.step}): "
                        f"continue it with --resume, or delete {checkpoint_dir(student_dir)} to start over.")
    for state in checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader", []):
        check_resumable(state, world_size, steps_per_call)
    return point
