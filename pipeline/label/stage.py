"""The label stage: generate inputs in Ray tasks, label them in teacher actors, commit shards.

  Generation ──▶ run_generation (task, CPU) ──inputs──▶ Labeler.label (actor, teacher loaded once) ──▶ Parquet shard
            └───── on CPU actors: made by the actor itself ─────▲                                 │
  driver: submits, bounds work in flight, records each returned shard in the manifest ◀──────────┘

With GPU actors, generation of the next shards overlaps the teacher's inference on the current
ones; CPU actors generate their own shards (pipeline/label/generation.py says why). Each shard's
bytes are a pure function of (config, seed, shard index, teacher), and a shard is committed by the
driver only after the worker has renamed it into place, so a retried or rerun shard is harmless:
a rerun skips every shard the manifest records whose checksum matches, and writes the rest.

A recorded shard that is missing or whose bytes changed after commit stops the stage before
anything starts, unless label.repair (`label --repair`) says to relabel it: the same (config,
seed, index, teacher) gives the same bytes, written and recorded as any shard is.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow.fs as pafs
import ray

from pipeline import shards
from pipeline.config import Config, fingerprint, result_fields
from pipeline.errors import RetriesExhausted, UserError
from pipeline.inputs import get_space
from pipeline.inputs.images import shard_seed
from pipeline.inputs.seeds import SeedData
from pipeline.label import faults
from pipeline.label.actor import ShardJob, TeacherFailed
from pipeline.label.generation import Generation, run_generation
from pipeline.label.pool import LOST_WORK, LabelerPool
from pipeline.label.repair import damaged_splits
from pipeline.label.storage_mode import keeps_recipes
from pipeline.resolve import add_code_dir
from pipeline.run import output, rundir, storage
from pipeline.run.lock import locked
from pipeline.run.ray_session import ray_session
from pipeline.run.rundir import SPLITS
from pipeline.shards.recipes import write_seed_file
from pipeline.teach.load import read_card
from teachers import TeacherCard

log = logging.getLogger(__name__)
MANIFEST_SAVE_INTERVAL_S = 2.0  # rewriting the manifest after every shard is O(shards^2) at scale
SHARDS_PER_ACTOR = 2  # in flight: one being labeled, one generated and waiting; memory stays flat


@dataclass
class SplitResult:
    split_dir: str
    shards: int
    rows: int
    written: int
    skipped: int
    rejected: int
    first_error: str = ""  # the teacher's first failure on a batch (its rows were rejected)
    repaired: list[str] = field(default_factory=list)  # files of damaged shards relabeled (label.repair)
    repaired_identical: int = 0  # of those, relabeled byte for byte as first recorded
    dropped: list[str] = field(default_factory=list)  # damaged shards of adaptive rounds, left to the rounds


@dataclass
class LabelResult:
    splits: dict[str, SplitResult] = field(default_factory=dict)


def generator_hash(cfg: Config, seed_images: np.ndarray | None) -> str:
    """What the inputs depend on: the data config and the exact seed images it draws from (none for
    a vector space: its points depend on the config alone)."""
    if seed_images is None:
        return fingerprint({"data": result_fields(cfg.data)})
    seed_hash = hashlib.sha256(np.ascontiguousarray(seed_images).tobytes()).hexdigest()
    # renderer: the version of the image generator's code (3: images rendered from per-row recipes, on one torch thread).
    return fingerprint({"data": result_fields(cfg.data), "seed_images": seed_hash, "shape": list(seed_images.shape),
                        "renderer": 3})


def _parameters(cfg: Config) -> list[dict] | None:
    return get_space(cfg.data.space).card_parameters(cfg)


def label_split(cfg: Config, paths: rundir.RunPaths, split: str, planned: int, base_seed: int, card: TeacherCard,
                generate: Callable[[ShardJob], Generation | ray.ObjectRef], labelers: Callable[[], LabelerPool],
                gen_hash: str, damaged: dict[int, str], seed_images: np.ndarray | None = None,
                recipes: bool = False) -> SplitResult:
    """Label shards 0..planned-1 of `split` that its manifest does not record, and record each one as
    it comes back. The label stage calls it per split, the adaptive rounds per round.

    `generate` turns a job into its inputs (a Generation to run, or an object ref of ready inputs);
    `labelers` gives the actor pool, started on first need; the caller shuts it down. `damaged`
    (index -> what is wrong) are recorded shards to drop and label again (label.repair).
    `recipes`: new shards keep recipes, which remake inputs from `seed_images`; these are written
    beside the shards of any split that keeps recipes (again if damaged).

    A shard whose worker, actor or node is lost is redone here, and only here: it is tried at most
    1 + label.max_retries times in all, then RetriesExhausted. Whatever stops the loop, the shards
    already returned are recorded in the manifest before the error propagates, so a rerun skips them."""
    split_dir = paths.split(split)
    manifest = shards.load_manifest(split_dir)
    if manifest is None:
        manifest = shards.Manifest(split=split, teacher_fingerprint=card.fingerprint, generator_hash=gen_hash,
                                   input_shape=list(card.input_shape), num_classes=card.num_outputs,
                                   input_space=cfg.data.space, task=cfg.task.kind, parameters=_parameters(cfg),
                                   planned_shards=planned, row_group_size=cfg.data.row_group_size,
                                   top_k=cfg.label.top_k, target_shape=card.output_shape)
    if seed_images is not None and (recipes or manifest.recipe):
        entry = write_seed_file(split_dir, seed_images, get_space(cfg.data.space).recipe_libraries())
        if manifest.recipe:  # the versions its recipes were made with stay on record
            entry["libraries"] = manifest.recipe["libraries"]
        manifest.recipe = entry
    # Dropped from the manifest, so relabeled like never-labeled shards (written, renamed, recorded).
    replaced = {i: manifest.shards.pop(i) for i in damaged}
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
    # Counted in samples, so the rate and the ETA speak of the teacher's work (a simulator's samples/s).
    per_shard = cfg.data.samples_per_shard
    bar = output.Progress(f"label {split}", planned * per_shard, "sample", initial=skipped * per_shard)
    done_here = 0
    last_save = started = time.monotonic()
    recorded_seconds = manifest.label_seconds
    try:
        while todo or in_flight:
            while todo and (actor := pool.least_loaded(SHARDS_PER_ACTOR)) is not None:
                job = todo.popleft()
                generated = generate(job)
                if isinstance(generated, Generation) and not pool.on_cpu:  # else the actor makes it (generation.py)
                    # Not retried by Ray: a lost generation fails the label call, and the shard is
                    # redone below, where its attempts are counted.
                    generated = run_generation.options(max_retries=0).remote(generated)
                handle = pool.actors[actor]
                in_flight[handle.label.remote(generated, job)] = (job, actor, handle)
                pool.load[actor] += 1
            done, _ = ray.wait([*in_flight, *pool.waiting], num_returns=1)
            for ref in done:
                if ref in pool.waiting:  # an actor is back from a loss
                    pool.answered(ref)
                    continue
                job, actor, handle = in_flight.pop(ref)
                pool.load[actor] -= 1
                record, lost = _returned(ref, split, job.index)
                if lost is not None:
                    attempts[job.index] += 1
                    if attempts[job.index] > cfg.label.max_retries:
                        raise RetriesExhausted(
                            f"{split} shard {job.index} was lost {attempts[job.index]} times (last: "
                            f"{type(lost).__name__}); the {len(manifest.shards)} shards done are kept: rerun to "
                            "finish.") from lost
                    if isinstance(lost, ray.exceptions.RayActorError):
                        pool.lost(actor, handle, lost)
                    bar.note(f"redoing {split} shard {job.index}: its worker was lost ({type(lost).__name__})")
                    todo.appendleft(job)
                    continue
                manifest.shards[record.index] = record
                bar.update(per_shard)
                done_here += 1
                faults.maybe_kill_driver(done_here)
            if time.monotonic() - last_save > MANIFEST_SAVE_INTERVAL_S or not (todo or in_flight):
                manifest.label_seconds = recorded_seconds + (time.monotonic() - started)
                shards.save_manifest(split_dir, manifest)
                last_save = time.monotonic()
    except BaseException:
        # The shards that came back are committed files, but the manifest is saved only every few
        # seconds: record them now, or the rerun the error asks for would label them all again.
        _record_returned(in_flight, manifest)
        manifest.label_seconds = recorded_seconds + (time.monotonic() - started)
        shards.save_manifest(split_dir, manifest)
        raise
    bar.close()
    shards.save_manifest(split_dir, manifest)  # also records an empty, complete split
    _remove_leftovers(split_dir)
    rejected = sum(r.rejected for r in manifest.shards.values())
    first_error = next((r.first_error for r in manifest.records() if r.first_error), "")
    # Shards past `planned` (adaptive rounds) come from stored proposals, not from here: dropped, the
    # rounds label them again.
    relabeled = {i: old for i, old in replaced.items() if i in manifest.shards}
    identical = sum(manifest.shards[i].sha256 == old.sha256 for i, old in relabeled.items())
    return SplitResult(split_dir, planned, manifest.rows, planned - skipped, skipped, rejected, first_error,
                       [r.path for r in relabeled.values()], identical,
                       [r.path for i, r in replaced.items() if i not in relabeled])


def _returned(ref: ray.ObjectRef, split: str, index: int) -> tuple[shards.ShardRecord | None, Exception | None]:
    """A label call's record, or the loss that stopped it (the shard is then redone). The teacher's
    own failure, and any other error, stops the stage."""
    try:
        return ray.get(ref), None
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, TeacherFailed):  # the teacher's own error: retrying would repeat it
            raise TeacherFailed(f"{split} shard {index}: {exc.cause}") from None
        if isinstance(exc.cause, LOST_WORK):  # a lost generation task reaches the label call wrapped
            return None, exc.cause
        raise
    except LOST_WORK as exc:
        return None, exc


def _record_returned(in_flight: dict, manifest: shards.Manifest) -> None:
    """Record the shards in flight whose records have already come back, without waiting for the rest
    (a stage that is stopping waits for nothing; those shards are redone by the rerun)."""
    try:
        ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0) if in_flight else ([], [])
        for ref in ready:
            try:
                record = ray.get(ref, timeout=0)
            except Exception:  # failed or lost: not committed
                continue
            manifest.shards[record.index] = record
    except Exception:  # Ray itself is failing: what the loop recorded is still saved
        pass


def _remove_leftovers(split_dir: str) -> None:
    """Delete temporary files of writes that died midway (readers never see them; this is tidying)."""
    fs, path = storage.resolve(split_dir)
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if ".tmp-" in info.base_name:
            fs.delete_file(info.path)


@locked
def run_label_stage(cfg: Config, seed: SeedData | None = None) -> LabelResult:
    """Label the run's train and held-out shards. `seed` replaces the configured seed dataset's
    images (for pipelines that bring their own)."""
    return _label_stage(cfg, rundir.prepare(cfg), seed)


def _label_stage(cfg: Config, paths: rundir.RunPaths, seed: SeedData | None) -> LabelResult:
    add_code_dir(cfg.code_dir)
    card = read_card(paths)
    if cfg.label.top_k is not None and cfg.label.top_k >= card.num_outputs:
        raise UserError(f"label.top_k = {cfg.label.top_k} keeps every one of the teacher's {card.num_outputs} classes; "
                        "leave it unset, or choose fewer.")
    space = get_space(cfg.data.space)
    # What generation starts from: the seed images already read by the caller, else the space's own
    # (images read them, a field space its base arrays; None for inputs made from the config alone).
    seed_images = seed.train_images if space.uses_seed_images and seed is not None else space.seed_images(cfg)
    gen_hash = generator_hash(cfg, seed_images)
    damaged = damaged_splits(cfg, paths, card.fingerprint, gen_hash)
    recipes, why = keeps_recipes(cfg, space, card.input_shape, card.num_outputs)
    if why:
        log.info("%s.", why)
    # With adapt.rounds, only round 0's share of the training shards is uniform (pipeline/adapt/).
    plan = {"train": (cfg.adapt.round_shards(cfg.data.shards)[0], cfg.data.seed), "heldout": (cfg.data.heldout_shards, cfg.data.heldout_seed)}
    result = LabelResult()
    with ray_session(cfg.address, cfg.code_dir):
        seed_ref = None if seed_images is None else ray.put(seed_images)  # one copy for every task and actor

        def generate(job: ShardJob) -> Generation:
            return Generation(*space.generation(cfg, seed_ref, job.split, job.seed, job.count, job.index, recipes))

        # Actors start on first need: a rerun with every shard in place loads no teacher.
        labelers = functools.cache(lambda: LabelerPool(cfg, paths, card, cfg.data.space))
        try:
            for split in SPLITS:
                planned, base_seed = plan[split]
                result.splits[split] = label_split(cfg, paths, split, planned, base_seed, card, generate, labelers,
                                                   gen_hash, damaged.get(split, {}), seed_images, recipes)
        finally:
            # On failure too: in a caller's Ray or on a cluster, nothing else ends the actors, and
            # they would hold their CPUs and GPUs until the driver exits.
            if labelers.cache_info().currsize:
                labelers().shutdown()
    return result
