"""The label stage: generate inputs in Ray tasks, label them in teacher actors, commit shards.

  generate_shard (task, CPU)  ──inputs──▶  Labeler.label (actor, teacher loaded once)  ──▶  Parquet shard
                                                                                   │
  driver: submits, bounds work in flight, records each returned shard in the manifest ◀┘

Generation of the next shards overlaps the teacher's inference on the current ones. Each shard's
bytes are a pure function of (config, seed, shard index, teacher), and a shard is committed by the
driver only after the worker has renamed it into place, so a retried or rerun shard is harmless:
a rerun skips every shard the manifest records whose checksum matches, and writes the rest.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow.fs as pafs
import ray
import torch
from tqdm.auto import tqdm

from pipeline import shards
from pipeline.config import Config, DataConfig, fingerprint, result_fields
from pipeline.errors import RetriesExhausted, UserError
from pipeline.inputs import images
from pipeline.inputs.images import generate_inputs, shard_seed
from pipeline.inputs.seeds import SeedData
from pipeline.label import faults
from pipeline.label.actor import ShardJob, TeacherFailed
from pipeline.label.pool import LOST_WORK, LabelerPool
from pipeline.resolve import add_code_dir
from pipeline.run import rundir, storage
from pipeline.run.lock import output_lock
from pipeline.run.ray_session import ray_session
from pipeline.run.rundir import SPLITS
from pipeline.teach.load import read_card
from pipeline.teach.stage import load_seed
from teachers import TeacherCard

MANIFEST_SAVE_INTERVAL_S = 2.0  # rewriting the manifest after every shard is O(shards^2) at scale


@dataclass
class SplitResult:
    split_dir: str
    shards: int
    rows: int
    written: int
    skipped: int
    rejected: int


@dataclass
class LabelResult:
    splits: dict[str, SplitResult] = field(default_factory=dict)


# num_cpus=0: generation is light next to the teacher, and must never wait for a CPU that teacher
# actors hold. If a node is lost and its actor restarts on a node already full of actors, a
# generation task asking for a CPU would wait forever while the actors wait for its inputs.
@ray.remote(num_cpus=0)
def generate_shard(seed_images: np.ndarray, data: DataConfig, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    torch.set_num_threads(1)  # generation is cheap; leave the cores to the teacher
    return generate_inputs(seed_images, data, seed, count)


def generator_hash(cfg: Config, seed_images: np.ndarray) -> str:
    """What the inputs depend on: the data config and the exact seed images it draws from."""
    seed_hash = hashlib.sha256(np.ascontiguousarray(seed_images).tobytes()).hexdigest()
    return fingerprint({"data": result_fields(cfg.data), "seed_images": seed_hash, "shape": list(seed_images.shape)})


def _label_split(cfg: Config, paths: rundir.RunPaths, split: str, planned: int, base_seed: int, card: TeacherCard,
                 seed_ref, labelers: Callable[[], LabelerPool], gen_hash: str) -> SplitResult:
    split_dir = paths.split(split)
    manifest = shards.load_manifest(split_dir)
    if manifest is not None and (manifest.teacher_fingerprint != card.fingerprint or manifest.generator_hash != gen_hash):
        what = "teacher" if manifest.teacher_fingerprint != card.fingerprint else "generator config"
        raise UserError(f"{split_dir} holds shards made with a different {what}; use another --out to label anew.")
    if manifest is None:
        manifest = shards.Manifest(split=split, teacher_fingerprint=card.fingerprint, generator_hash=gen_hash,
                                   input_shape=list(card.input_shape), num_classes=card.num_outputs,
                                   input_space=images.NAME,
                                   planned_shards=planned, row_group_size=cfg.data.row_group_size,
                                   top_k=cfg.label.top_k)
    bad = {i: problem for i, r in manifest.shards.items() if (problem := shards.check_shard(split_dir, r))}
    for i, problem in bad.items():
        tqdm.write(f"relabeling shard {i}: {problem}")
        del manifest.shards[i]
    metadata = {"teacher_fingerprint": card.fingerprint, "generator_hash": gen_hash, "split": split,
                "input_shape": list(card.input_shape), "num_classes": card.num_outputs}
    todo = deque(
        ShardJob(split, split_dir, i, shard_seed(base_seed, split, i), cfg.data.samples_per_shard,
                 cfg.data.row_group_size, metadata)
        for i in range(planned) if i not in manifest.shards
    )
    skipped = planned - len(todo)
    pool = labelers() if todo else None
    in_flight: dict = {}  # label ObjectRef -> (job, actor index, actor handle)
    attempts: Counter = Counter()
    bar = tqdm(total=planned, initial=skipped, desc=f"label {split}", unit="shard")
    last_save = time.monotonic()
    while todo or in_flight:
        # At most two shards per actor in flight: one being labeled, one generated and waiting.
        while todo and len(in_flight) < 2 * len(pool.actors):
            job = todo.popleft()
            generated = generate_shard.options(max_retries=cfg.label.max_retries).remote(
                seed_ref, cfg.data, job.seed, job.count)
            actor = pool.least_loaded()
            handle = pool.actors[actor]
            in_flight[handle.label.remote(generated, job)] = (job, actor, handle)
            pool.load[actor] += 1
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            job, actor, handle = in_flight.pop(ref)
            pool.load[actor] -= 1
            try:
                record = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, TeacherFailed):  # the teacher's own error: retrying would repeat it
                    raise TeacherFailed(f"{split} shard {job.index}: {exc.cause}") from None
                raise
            except LOST_WORK as exc:
                attempts[job.index] += 1
                if attempts[job.index] > cfg.label.max_retries:
                    raise RetriesExhausted(
                        f"{split} shard {job.index} was lost {attempts[job.index]} times (last: {type(exc).__name__}); "
                        f"the {len(manifest.shards)} shards done are kept: rerun to finish.") from exc
                if isinstance(exc, ray.exceptions.ActorDiedError):
                    pool.replace(actor, handle)
                tqdm.write(f"redoing {split} shard {job.index}: its worker was lost ({type(exc).__name__})")
                todo.appendleft(job)
                continue
            manifest.shards[record.index] = record
            bar.update(1)
            faults.maybe_kill_driver(bar.n - skipped)
        if time.monotonic() - last_save > MANIFEST_SAVE_INTERVAL_S or not (todo or in_flight):
            shards.save_manifest(split_dir, manifest)
            last_save = time.monotonic()
    bar.close()
    shards.save_manifest(split_dir, manifest)  # also records an empty, complete split
    _remove_leftovers(split_dir)
    rejected = sum(r.rejected for r in manifest.shards.values())
    return SplitResult(split_dir, planned, manifest.rows, planned - skipped, skipped, rejected)


def _remove_leftovers(split_dir: str) -> None:
    """Delete temporary files of writes that died midway (readers never see them; this is tidying)."""
    fs, path = storage.resolve(split_dir)
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if ".tmp-" in info.base_name:
            fs.delete_file(info.path)


def run_label_stage(cfg: Config, seed: SeedData | None = None) -> LabelResult:
    """Label the run's train and held-out shards. `seed` replaces the configured seed dataset's
    images (for pipelines that bring their own)."""
    paths = rundir.prepare(cfg)
    with output_lock(cfg.out):
        return _label_stage(cfg, paths, seed)


def _label_stage(cfg: Config, paths: rundir.RunPaths, seed: SeedData | None) -> LabelResult:
    add_code_dir(cfg.code_dir)
    card = read_card(paths)
    if cfg.label.top_k is not None and cfg.label.top_k >= card.num_outputs:
        raise UserError(f"label.top_k = {cfg.label.top_k} keeps every one of the teacher's {card.num_outputs} classes; "
                        "leave it unset, or choose fewer.")
    seed = seed if seed is not None else load_seed(cfg)
    gen_hash = generator_hash(cfg, seed.train_images)
    plan = {"train": (cfg.data.shards, cfg.data.seed), "heldout": (cfg.data.heldout_shards, cfg.data.heldout_seed)}
    result = LabelResult()
    with ray_session(cfg.address, cfg.code_dir):
        seed_ref = ray.put(seed.train_images)
        # Actors start on first need: a rerun with every shard in place loads no teacher.
        labelers = functools.cache(lambda: LabelerPool(cfg, paths, card, images.NAME))
        for split in SPLITS:
            planned, base_seed = plan[split]
            result.splits[split] = _label_split(cfg, paths, split, planned, base_seed, card, seed_ref, labelers,
                                                gen_hash)
        if labelers.cache_info().currsize:
            labelers().shutdown()
    return result
