"""The labeling actor: holds one teacher for its whole life and turns generated inputs into
committed shard files (Ray's callable-class shape: load in __init__; testable without Ray).

With label.timeout_s the teacher runs in a process of the actor's own, which is killed and started
again when a batch overruns (pipeline/label/time_limit.py): that batch's rows are rejected and
counted like those of a batch that raised, and the actor, its other batches and its shard go on.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import shards
from pipeline.errors import UserError
from pipeline.inputs import space
from pipeline.label import faults
from pipeline.label.generation import Generation
from pipeline.label.time_limit import BatchFailed, ReloadFailed, TeacherProcess, TeacherProcessDied
from pipeline.run import rundir, storage
from pipeline.tasks import get_task
from pipeline.teach.load import load_teacher


@dataclass(frozen=True)
class ShardJob:
    split: str
    split_dir: str
    index: int
    seed: int
    count: int
    row_group_size: int
    metadata: dict


class TeacherFailed(UserError):
    """The teacher raised, or returned the wrong shape, on a batch of generated inputs."""


def load_labeling_teacher(root: str, fingerprint: str, threads: int, bf16_on_gpu: bool, input_space: str):
    """The run's teacher as one call, stored inputs -> outputs, and its card; in the labeling actor,
    or in the teacher process that label.timeout_s puts it in (pipeline/label/time_limit.py)."""
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher, card = load_teacher(rundir.RunPaths(root), device, bf16_on_gpu, threads)
    if card.fingerprint != fingerprint:
        raise UserError(f"the teacher in {root} changed while its shards were being labeled.")
    decode = space.numpy_decoder(input_space, card.input_shape)
    return (lambda batch: np.asarray(teacher(decode(batch)))), card


class Labeler:
    def __init__(self, root: str, fingerprint: str, batch_size: int, threads: int, bf16_on_gpu: bool = True,
                 top_k: int | None = None, input_space: str = "images", task: str = "classification",
                 timeout_s: float | None = None):
        torch.set_num_threads(threads)
        load = functools.partial(load_labeling_teacher, root, fingerprint, threads, bf16_on_gpu, input_space)
        if timeout_s:
            # In a process of its own, killed when a batch overruns: SIGALRM alone cannot stop a call
            # blocked in C or Fortran (time_limit.py). Its inputs and outputs cross a socket.
            self.teacher = TeacherProcess(load, timeout_s)
            self.card = self.teacher.info
        else:
            self.teacher, self.card = load()
        self.batch_size, self.top_k, self.task, self.timeout_s = batch_size, top_k, task, timeout_s

    def outputs(self, inputs: np.ndarray) -> tuple[np.ndarray, str, float]:
        """The teacher's outputs, float32 [n, K], for stored inputs, batch by batch; the rows of a
        batch on which the teacher raised or timed out are NaN (rejected later). Also returns the
        first such failure and the seconds spent in the teacher (a hung batch's included)."""
        out, first_error, seconds, failed = [], "", 0.0, 0
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start : start + self.batch_size]
            began = time.perf_counter()
            try:
                y = np.asarray(self.teacher(batch))
            except TeacherProcessDied:  # lost work, not a failure of this batch: the shard is redone
                raise
            except ReloadFailed as exc:  # the teacher loaded once, then not again: nothing to go on with
                raise TeacherFailed(str(exc)) from None
            except Exception as exc:  # the teacher's own failure (raised, timed out): rows rejected, labeling goes on
                described = str(exc) if isinstance(exc, BatchFailed) else f"{type(exc).__name__}: {exc}"
                first_error = first_error or described
                failed += 1
                y = np.full((len(batch), self.card.num_outputs), np.nan, np.float32)
            seconds += time.perf_counter() - began
            if y.shape != (len(batch), self.card.num_outputs):
                raise TeacherFailed(f"the teacher returned shape {list(y.shape)} for {len(batch)} inputs; expected "
                                    f"[{len(batch)}, {self.card.num_outputs}].")
            out.append(y.astype(np.float32, copy=False))
        if out and failed == len(out):  # every batch failed (or hung): the teacher is broken, not one input
            raise TeacherFailed(f"the teacher failed on every batch of {len(inputs)} generated inputs; the first "
                                f"failure: {first_error}")
        outputs = np.concatenate(out) if out else np.zeros((0, self.card.num_outputs), np.float32)
        return outputs, first_error, seconds

    def label(self, generated: tuple | Generation, job: ShardJob) -> shards.ShardRecord:
        """Label a shard's inputs and commit the shard. `generated` is (inputs, kinds), or (inputs,
        kinds, recipes) for a shard that keeps the recipes instead of the inputs."""
        made = generated.make() if isinstance(generated, Generation) else generated
        inputs, kinds = made[0], made[1]
        recipes = made[2] if len(made) > 2 else None
        outputs, first_error, seconds = self.outputs(inputs)
        targets, finite = get_task(self.task).stored_targets(outputs)
        sample_ids = job.index * job.count + np.arange(len(inputs), dtype=np.int64)
        table = shards.make_table(sample_ids[finite], job.seed, kinds[finite], inputs[finite], targets[finite],
                                  job.metadata, top_k=self.top_k, target_column=get_task(self.task).column,
                                  recipes=None if recipes is None else recipes[finite])
        if faults.should_crash(job.split, job.index):
            path = storage.local_path(storage.join(job.split_dir, shards.shard_file_name(job.split, job.index)))
            faults.crash_midway(path, shards.serialize(table, job.row_group_size))
        record = shards.write_shard(table, job.split_dir, job.split, job.index, job.seed, job.row_group_size,
                                    rejected=int((~finite).sum()))
        record.first_error, record.teacher_seconds = first_error[:500], round(seconds, 6)
        import ray  # only when running as an actor: the record says which node labeled the shard

        if ray.is_initialized():
            record.node = ray.get_runtime_context().get_node_id()
        return record
