"""The rounds of active distillation: spend the teacher's labels where the student is wrong.

    round 0   the label stage labels adapt.round_shards(data.shards)[0] training shards uniformly
              (and the held-out shards, which stay uniform); a student trains on them
    round r   score every labeled training row with round r-1's student (pipeline.adapt.score),
              propose inputs around the worst (pipeline.inputs.proposals), store the proposal, label it
              with the teacher as round r's shards, train a student on every round's shards

Round r's shards are training shards like any others, in the same split and manifest: indices
continue after round r-1's (so file names and sample ids, index * samples_per_shard + row, are unique
across rounds), each written atomically by the label stage's actors and recorded with its round and
provenance (the stored proposal's file and sha256, its rows, kinds and the source rows' sample ids).
Every reader (training, eval, verify) reads the one train manifest and needs no change; the held-out
split is untouched.

Each round's student trains from scratch on all rounds so far (adapt.round_epochs for rounds before
the last; the last trains train.max_epochs into DIR/student, where the eval stage finds it). Resuming
is by what is on storage: a stored proposal is labeled again, never recomputed; a round whose
shards are all recorded is not relabeled; a student with a card is reused, one with a checkpoint
continues from it. So a killed run, rerun, continues in the round it was in.

DIR/adapt/rounds.json records, per round, the labels spent so far and the student's figures on the
training and held-out shards: the report's curve of agreement (or error) against labels.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import logging
from dataclasses import dataclass

import numpy as np
import ray

from pipeline import shards, track
from pipeline.adapt.candidates import least_sure
from pipeline.inputs.proposals import PROPOSAL_KINDS, Proposal
from pipeline.adapt.score import score_split
from pipeline.config import Config
from pipeline.evaluate.stage import evaluate_split
from pipeline.inputs import get_space
from pipeline.label.actor import ShardJob
from pipeline.label.pool import LabelerPool
from pipeline.label.stage import generator_hash, label_split
from pipeline.run import output, rundir, storage
from pipeline.run.ray_session import ray_session
from pipeline.run.lock import locked
from pipeline.shards.manifest import sha256_of
from pipeline.tasks import get_task
from pipeline.teach.load import read_card
from pipeline.train import checkpoints
from pipeline.train.stage import fit_student, run_train_stage, track_student
from pipeline.train.student import load_student_dir

log = logging.getLogger(__name__)
ADAPT_DIR = "adapt"
ROUNDS_JSON = "rounds.json"


@dataclass
class AdaptResult:
    rounds: list[dict]  # rounds.json's entries


def adapt_dir(paths: rundir.RunPaths, *parts: str) -> str:
    return storage.join(paths.root, ADAPT_DIR, *parts)


def proposal_path(paths: rundir.RunPaths, round_: int) -> str:
    return adapt_dir(paths, f"round-{round_}", "proposal.npz")


def student_dir(paths: rundir.RunPaths, round_: int, last: bool) -> str:
    return paths.student_dir if last else adapt_dir(paths, f"round-{round_}", "student")


def read_rounds(out: str) -> list[dict]:
    """rounds.json of the run in `out` (empty when it has none)."""
    path = adapt_dir(rundir.RunPaths(out), ROUNDS_JSON)
    return storage.read_json(path)["rounds"] if storage.exists(path) else []


def round_epochs(cfg: Config) -> int:
    """Training epochs of an adaptive round's student before the last: adapt.round_epochs, or the
    task's choice when unset; never more than train.max_epochs."""
    epochs = cfg.adapt.round_epochs
    if epochs is None:
        epochs = get_task(cfg.task.kind).round_epochs(cfg)
    return min(epochs, cfg.train.max_epochs)


def summary(metrics: dict, task: str) -> dict:
    """The figures a round is judged by (the task's: top-1 agreement, relative L2 error quantiles, ...)."""
    return get_task(task).round_figure(metrics)


def _save_proposal(path: str, proposal: Proposal) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **proposal.to_arrays())
    data = buffer.getvalue()
    storage.write_bytes_atomic(path, data)
    return sha256_of(data)


def load_proposal(path: str) -> tuple[Proposal, str]:
    data = storage.read_bytes(path)
    with np.load(io.BytesIO(data)) as arrays:
        return Proposal(**{k: arrays[k] for k in arrays.files}), sha256_of(data)


def _propose(cfg: Config, paths: rundir.RunPaths, round_: int, count: int, previous: str,
             seed_images: np.ndarray | None) -> Proposal:
    """Round `round_`'s `count` inputs: for images, adapt.least_sure_share of them the generated
    inputs the `previous` student is least sure of; the rest around its worst training rows."""
    space, task = get_space(cfg.data.space), get_task(cfg.task.kind)
    parts = []
    ranks = space.ranks_generated_inputs and task.ranks_by_margin
    sure = round(count * cfg.adapt.least_sure_share) if ranks else 0
    if sure:
        _, card, weights = load_student_dir(previous)
        parts.append(least_sure(card, weights, seed_images, cfg.data, round_, sure, cfg.adapt.pool))
    around = count - sure
    if around:
        scored = score_split(previous, paths.split("train"), cfg.eval.batch_size)
        n = max(1, -(-around // cfg.adapt.proposals_per_row))
        seed = int(np.random.SeedSequence([cfg.data.seed, round_, 0xADA]).generate_state(1)[0])
        parts.append(space.propose_around(cfg, scored.inputs[:n], scored.sample_ids[:n],
                                          scored.rows["teacher_class"][:n], around, round_, seed))
    return Proposal.concat(parts)


def _provenance(round_: int, path: str, sha: str, part: Proposal, start: int, stop: int) -> dict:
    kinds = {PROPOSAL_KINDS[k]: int(c) for k, c in zip(*np.unique(part.kind, return_counts=True))}
    sources = np.unique(np.concatenate([part.source[part.source >= 0], part.partner[part.partner >= 0]]))
    return {"round": round_, "proposal": path.rsplit("/", 1)[-1], "proposal_sha256": sha, "rows": [start, stop],
            "kinds": kinds, "source_sample_ids": sources.tolist()}


def _label_round(cfg: Config, paths: rundir.RunPaths, round_: int, bounds: list[int], card, gen_hash: str) -> None:
    """Label round `round_`'s shards (indices bounds[r-1]..bounds[r]-1) from its stored proposal.
    The teacher actors live for this round only: held between rounds, their CPUs would starve the
    next round's scoring tasks (a simulator's actors take every core)."""
    split_dir = paths.split("train")
    manifest = shards.load_manifest(split_dir)
    per = cfg.data.samples_per_shard
    path = proposal_path(paths, round_)
    proposal, sha = load_proposal(path)
    first = bounds[round_ - 1]
    if manifest.planned_shards < bounds[round_]:
        manifest.planned_shards = bounds[round_]  # the manifest is incomplete until the round is labeled
        shards.save_manifest(split_dir, manifest)
    todo = [i for i in range(first, bounds[round_]) if i not in manifest.shards]
    if todo:
        inputs, kinds = proposal.inputs, proposal.made

        def generate(job: ShardJob):
            start = (job.index - first) * per
            return ray.put((inputs[start:start + per], kinds[start:start + per]))

        labelers = functools.cache(lambda: LabelerPool(cfg, paths, card, cfg.data.space))
        try:
            label_split(cfg, paths, "train", bounds[round_], cfg.data.seed, card, generate, labelers, gen_hash, {})
        finally:
            if labelers.cache_info().currsize:
                labelers().shutdown()
        manifest = shards.load_manifest(split_dir)
    for i in range(first, bounds[round_]):
        record = manifest.shards[i]
        start, stop = (i - first) * per, (i - first + 1) * per
        record.round = round_
        record.provenance = _provenance(round_, path, sha, proposal.take(start, stop), start, stop)
    shards.save_manifest(split_dir, manifest)


def _train_round(cfg: Config, paths: rundir.RunPaths, round_: int, last: bool) -> str:
    """Train (or reuse, or continue) round `round_`'s student; returns its directory."""
    where = student_dir(paths, round_, last)
    resume = storage.exists(checkpoints.last_checkpoint(where))
    epochs = cfg.train.max_epochs if last else round_epochs(cfg)
    train = dataclasses.replace(cfg.train, max_epochs=epochs, resume=resume)
    round_cfg = dataclasses.replace(cfg, train=train)
    if last:
        run_train_stage(round_cfg)  # DIR/student, exported as the train stage exports it
        return where
    round_cfg = track.bind(round_cfg, child=f"round-{round_}")  # its curves: a child run of the run's (--track.to)
    trained = not storage.exists(storage.join(where, rundir.STUDENT_CARD))
    if trained:
        fit_student(round_cfg, paths, where, preflight=cfg.train.preflight and round_ == 0)
    track_student(round_cfg, where, trained)
    return where


def _figures(cfg: Config, paths: rundir.RunPaths, round_: int, where: str) -> dict:
    student, card, weights = load_student_dir(where)
    values = {s: summary(evaluate_split(student, card, weights, paths.split(s), cfg.eval.batch_size,
                                        tolerance=cfg.task.tolerance).compute(), card.task) for s in rundir.SPLITS}
    manifest = shards.require_manifest(paths.split("train"))
    return {"round": round_, "shards": len(manifest.shards), "labels": manifest.rows, **values}


GALLERY_PER_KIND = 4  # proposed inputs of each kind shown per round in the report


def _gallery(paths: rundir.RunPaths, rounds: list[int]) -> list[dict]:
    """A few proposed inputs of each kind per round, as the report's gallery stores inputs."""
    out = []
    for r in rounds:
        if not r or not storage.exists(proposal_path(paths, r)):
            continue
        proposal, _ = load_proposal(proposal_path(paths, r))
        for k, kind in enumerate(PROPOSAL_KINDS):
            for i in np.nonzero(proposal.kind == k)[0][:GALLERY_PER_KIND]:
                x = np.ascontiguousarray(proposal.inputs[i])
                out.append({"round": r, "kind": kind, "source": int(proposal.source[i]),
                            "partner": int(proposal.partner[i]),
                            "input": {"dtype": str(x.dtype), "shape": list(x.shape),
                                      "base64": base64.b64encode(x.tobytes()).decode()}})
    return out


def _uniform(compare: str | None) -> dict | None:
    """The figures of the uniform run named by adapt.compare, from its report.json."""
    if not compare or not storage.exists(rundir.RunPaths(compare).report_json):
        return None
    report = storage.read_json(rundir.RunPaths(compare).report_json)
    task = get_task(report.get("task", "classification"))
    values = {s: summary(report[task.metrics_section][s], task.name) for s in rundir.SPLITS}
    return {"run": compare, "labels": values["train"]["samples"], **values}


def _write_rounds(cfg: Config, paths: rundir.RunPaths, history: dict[int, dict]) -> None:
    storage.write_json_atomic(adapt_dir(paths, ROUNDS_JSON), {
        "rounds": [history[k] for k in sorted(history)], "uniform": _uniform(cfg.adapt.compare),
        "gallery": _gallery(paths, sorted(history))})


@locked
def run_adapt(cfg: Config) -> AdaptResult:
    """The rounds after the label stage has labeled round 0 (and the held-out shards); ends with the
    last round's student in DIR/student."""
    paths = rundir.prepare(cfg)
    cfg = track.bind(cfg)  # the tracker's run (--track.to), opened before the rounds' work
    plan = cfg.adapt.round_shards(cfg.data.shards)
    bounds = np.cumsum(plan).tolist()
    card = read_card(paths)
    seed_images = get_space(cfg.data.space).seed_images(cfg)  # read once, for every round
    gen_hash = generator_hash(cfg, seed_images)
    history = {r["round"]: r for r in read_rounds(cfg.out)}
    with ray_session(cfg.address, cfg.code_dir):
        for r in range(len(plan)):
            last = r == len(plan) - 1
            if r:
                path = proposal_path(paths, r)
                if not storage.exists(path):
                    count = plan[r] * cfg.data.samples_per_shard
                    output.result(f"adapt round {r}: choosing {count:,} inputs to label with round {r - 1}'s student")
                    _save_proposal(path, _propose(cfg, paths, r, count, student_dir(paths, r - 1, False), seed_images))
                _label_round(cfg, paths, r, bounds, card, gen_hash)
            where = _train_round(cfg, paths, r, last)
            if r not in history:
                history[r] = _figures(cfg, paths, r, where)
                _write_rounds(cfg, paths, history)
            track.log_rounds(cfg, [history[k] for k in sorted(history)])  # as they come (--track.to)
            output.result(round_line(history[r], cfg.task.kind))
    return AdaptResult([history[k] for k in sorted(history)])


def round_line(entry: dict, task: str) -> str:
    figures = get_task(task).round_line(entry["heldout"], entry["train"])
    return f"adapt round {entry['round']}: {entry['labels']:,} labels in {entry['shards']} shards; {figures}"
