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
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import ray
import torch
from tqdm.auto import tqdm

from pipeline import rundir, shards, storage
from pipeline.config import Config, DataConfig, fingerprint, result_fields
from pipeline.errors import UserError
from pipeline.generate import generate_inputs, shard_seed
from pipeline.ray_session import cluster_cpus, cluster_gpus, ray_session
from pipeline.teacher import load_seed, load_teacher
from teachers import TeacherCard, build_teacher, to_float

SPLITS = ("train", "heldout")
MANIFEST_SAVE_INTERVAL_S = 2.0  # rewriting the manifest after every shard is O(shards^2) at scale


@dataclass(frozen=True)
class ShardJob:
    split: str
    split_dir: str
    index: int
    seed: int
    count: int
    row_group_size: int
    metadata: dict


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


@ray.remote
def generate_shard(seed_images: np.ndarray, data: DataConfig, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    torch.set_num_threads(1)  # generation is cheap; leave the cores to the teacher
    return generate_inputs(seed_images, data, seed, count)


class Labeler:
    """Holds one teacher for its whole life and turns generated inputs into committed shard files."""

    def __init__(self, weights_path: str, card: dict, batch_size: int, threads: int):
        torch.set_num_threads(threads)
        self.card = TeacherCard.from_dict(card)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.teacher = build_teacher(self.card, storage.read_bytes(weights_path), weights_path).to(self.device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def logits(self, inputs: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(inputs), self.batch_size):
            x = to_float(torch.tensor(inputs[start : start + self.batch_size], device=self.device))
            out.append(self.teacher(x).float().cpu())
        return torch.cat(out).numpy()

    def label(self, generated: tuple[np.ndarray, np.ndarray], job: ShardJob) -> shards.ShardRecord:
        inputs, kinds = generated
        logits = self.logits(inputs)
        # Non-finite logits would poison training; such rows are dropped and counted, never written.
        # (float16 overflows past 65504, so check after the cast.)
        logits16 = logits.astype(np.float16)
        finite = np.isfinite(logits16).all(axis=1)
        sample_ids = job.index * job.count + np.arange(len(inputs), dtype=np.int64)
        table = shards.make_table(sample_ids[finite], job.seed, kinds[finite], inputs[finite], logits16[finite],
                                  job.metadata)
        return shards.write_shard(table, job.split_dir, job.split, job.index, job.seed, job.row_group_size,
                                  rejected=int((~finite).sum()))


def generator_hash(cfg: Config) -> str:
    """What the inputs depend on: the data config and the seed images it draws from."""
    t = cfg.teacher
    return fingerprint({"data": result_fields(cfg.data), "dataset": t.dataset, "test_fraction": t.test_fraction,
                        "split_seed": t.seed})


def _start_labelers(cfg: Config, paths: rundir.RunPaths, card: TeacherCard) -> list:
    gpus = cluster_gpus()
    num_gpus = cfg.label.num_gpus if cfg.label.num_gpus is not None else (1 if gpus else 0)
    cpus = cluster_cpus()
    count = cfg.label.actors or (max(1, int(gpus / num_gpus)) if num_gpus else max(1, cpus // 2))
    # On CPU, the actors share the cores between them; generation tasks are light and run beside.
    threads = 1 if num_gpus else max(1, cpus // count)
    actor_cls = ray.remote(Labeler).options(
        num_cpus=1, num_gpus=num_gpus, max_restarts=-1, max_task_retries=cfg.label.max_retries
    )
    return [actor_cls.remote(paths.teacher_weights, card.to_dict(), cfg.label.batch_size, threads)
            for _ in range(count)]


def _label_split(cfg: Config, paths: rundir.RunPaths, split: str, planned: int, base_seed: int, card: TeacherCard,
                 seed_ref, labelers: Callable[[], list], gen_hash: str) -> SplitResult:
    split_dir = paths.split(split)
    manifest = shards.load_manifest(split_dir)
    if manifest is not None and (manifest.teacher_fingerprint != card.fingerprint or manifest.generator_hash != gen_hash):
        what = "teacher" if manifest.teacher_fingerprint != card.fingerprint else "generator config"
        raise UserError(f"{split_dir} holds shards made with a different {what}; use another --out to label anew.")
    if manifest is None:
        manifest = shards.Manifest(split=split, teacher_fingerprint=card.fingerprint, generator_hash=gen_hash,
                                   input_shape=list(card.input_shape), num_classes=card.num_classes,
                                   planned_shards=planned, row_group_size=cfg.data.row_group_size)
    bad = {i: problem for i, r in manifest.shards.items() if (problem := shards.check_shard(split_dir, r))}
    for i, problem in bad.items():
        tqdm.write(f"relabeling shard {i}: {problem}")
        del manifest.shards[i]
    metadata = {"teacher_fingerprint": card.fingerprint, "generator_hash": gen_hash, "split": split,
                "input_shape": list(card.input_shape), "num_classes": card.num_classes}
    todo = deque(
        ShardJob(split, split_dir, i, shard_seed(base_seed, split, i), cfg.data.samples_per_shard,
                 cfg.data.row_group_size, metadata)
        for i in range(planned) if i not in manifest.shards
    )
    skipped = planned - len(todo)
    actors = labelers() if todo else []
    in_flight: dict = {}  # label ObjectRef -> (job, actor index)
    load = [0] * len(actors)
    bar = tqdm(total=planned, initial=skipped, desc=f"label {split}", unit="shard")
    last_save = time.monotonic()
    while todo or in_flight:
        # At most two shards per actor in flight: one being labeled, one generated and waiting.
        while todo and len(in_flight) < 2 * len(actors):
            job = todo.popleft()
            generated = generate_shard.options(max_retries=cfg.label.max_retries).remote(
                seed_ref, cfg.data, job.seed, job.count)
            actor = min(range(len(actors)), key=load.__getitem__)
            in_flight[actors[actor].label.remote(generated, job)] = (job, actor)
            load[actor] += 1
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            job, actor = in_flight.pop(ref)
            load[actor] -= 1
            record = ray.get(ref)
            manifest.shards[record.index] = record
            bar.update(1)
        if time.monotonic() - last_save > MANIFEST_SAVE_INTERVAL_S or not (todo or in_flight):
            shards.save_manifest(split_dir, manifest)
            last_save = time.monotonic()
    bar.close()
    shards.save_manifest(split_dir, manifest)  # also records an empty, complete split
    rejected = sum(r.rejected for r in manifest.shards.values())
    return SplitResult(split_dir, planned, manifest.rows, planned - skipped, skipped, rejected)


def run_label_stage(cfg: Config) -> LabelResult:
    paths = rundir.prepare(cfg)
    _, card = load_teacher(paths)
    seed = load_seed(cfg)
    gen_hash = generator_hash(cfg)
    plan = {"train": (cfg.data.shards, cfg.data.seed), "heldout": (cfg.data.heldout_shards, cfg.data.heldout_seed)}
    result = LabelResult()
    with ray_session(cfg.address):
        seed_ref = ray.put(seed.train_images)
        # Actors start on first need: a rerun with every shard in place loads no teacher.
        labelers = functools.cache(lambda: _start_labelers(cfg, paths, card))
        for split in SPLITS:
            planned, base_seed = plan[split]
            result.splits[split] = _label_split(cfg, paths, split, planned, base_seed, card, seed_ref, labelers,
                                                gen_hash)
        if labelers.cache_info().currsize:
            for actor in labelers():
                ray.kill(actor)
    return result
