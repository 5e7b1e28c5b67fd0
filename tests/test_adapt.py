"""Active distillation (pipeline/adapt/): rounds are shards like any others, recorded with their
round and provenance; sample ids stay unique across rounds; scoring sees every row once; a run
killed in round 1 resumes in round 1."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from pipeline import shards
from pipeline.adapt.candidates import least_sure, margins
from pipeline.adapt.loop import proposal_path, read_rounds, run_adapt, student_dir
from pipeline.adapt.score import score_split
from pipeline.inputs import space
from pipeline.inputs.images import generate_inputs, shard_seed
from pipeline.label.stage import run_label_stage
from pipeline.run import rundir
from pipeline.inputs.seeds import load_seed
from pipeline.teach.stage import run_teacher_stage
from pipeline.train.faults import TRAIN_FAULT
from pipeline.train.student import load_student_dir, student_from
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def adapted(ray_local, tmp_path_factory):
    """A tiny run of two adaptive rounds, killed once in round 1's training and then rerun."""
    cfg = tiny_config(tmp_path_factory.mktemp("adapt") / "out", adapt={"rounds": 2, "least_sure_share": 0.5})
    run_teacher_stage(cfg)
    run_label_stage(cfg)
    paths = rundir.RunPaths(cfg.out)
    # Round 0 trains 2 epochs x 4 steps; round 1 (16 steps) dies past its step 12, after its shards were labeled.
    os.environ[TRAIN_FAULT] = "12"
    try:
        with pytest.raises(RuntimeError):
            run_adapt(cfg)
    finally:
        del os.environ[TRAIN_FAULT]
    killed = {
        "rounds": [r["round"] for r in read_rounds(cfg.out)],
        "round0_card": os.stat(os.path.join(student_dir(paths, 0, False), rundir.STUDENT_CARD)).st_mtime_ns,
        "proposal": hashlib.sha256(open(proposal_path(paths, 1), "rb").read()).hexdigest(),
        "manifest": shards.load_manifest(paths.split("train")),
    }
    result = run_adapt(cfg)
    return cfg, paths, killed, result


def test_rounds_are_recorded_shards_with_provenance(adapted):
    cfg, paths, _, result = adapted
    manifest = shards.require_manifest(paths.split("train"))
    assert [r.round for r in manifest.records()] == [0, 1, 2]  # tiny: 3 shards, one a round
    assert manifest.complete and manifest.planned_shards == cfg.data.shards
    ids = shards.read_split(paths.split("train"), manifest, ("sample_id",))["sample_id"].numpy()
    assert len(np.unique(ids)) == len(ids) == manifest.rows
    assert manifest.records()[0].provenance is None
    for record in manifest.records()[1:]:
        p = record.provenance
        assert p["round"] == record.round and sum(p["kinds"].values()) == record.rows
        assert "least-sure" in p["kinds"] and set(p["kinds"]) <= {"warp", "mixup", "least-sure"}
        data = open(proposal_path(paths, record.round), "rb").read()
        assert hashlib.sha256(data).hexdigest() == p["proposal_sha256"]
        earlier = {int(i) for i in ids[: sum(r.rows for r in manifest.records() if r.round < record.round)]}
        # least-sure rows come from the generator, not from a labeled row: the others name their sources
        assert p["source_sample_ids"] and set(p["source_sample_ids"]) <= earlier  # proposed around labeled rows
    assert [r["labels"] for r in result.rounds] == [256, 512, 768]
    heldout = shards.require_manifest(paths.split("heldout"))
    assert all(r.round == 0 and r.provenance is None for r in heldout.records())


def test_least_sure_candidates_are_the_smallest_margins_of_the_whole_pool(adapted):
    cfg, paths, _, _ = adapted
    _, card, weights = load_student_dir(student_dir(paths, 0, False))
    seed_images = load_seed(cfg).train_images
    got = least_sure(card, weights, seed_images, cfg.data, 1, 100, pool=5)
    # The same pool scored whole in this process: Ray tasks keeping their own best lose nothing.
    per = cfg.data.samples_per_shard
    pool = [generate_inputs(seed_images, cfg.data, shard_seed(cfg.data.seed, "adapt-1", i), per)
            for i in range(-(-5 * 100 // per))]
    inputs = np.concatenate([x for x, _ in pool])
    m = margins(student_from(card, weights), space.decode_module(card.input_space, card.input_shape, None),
                inputs.reshape(len(inputs), -1))
    best = np.lexsort((np.arange(len(m)), m))[:100]
    assert np.array_equal(got.inputs, inputs[best])
    assert np.array_equal(got.made, np.concatenate([k for _, k in pool])[best])
    assert m[best].max() <= np.quantile(m, 100 / len(m)) + 1e-12


def test_killed_run_resumes_in_its_round(adapted):
    _, paths, killed, result = adapted
    assert killed["rounds"] == [0]  # died in round 1's training
    assert killed["manifest"].planned_shards == 2 and sorted(killed["manifest"].shards) == [0, 1]
    # Rerun: round 0's student and round 1's proposal and shards are kept, not redone.
    assert os.stat(os.path.join(student_dir(paths, 0, False), rundir.STUDENT_CARD)).st_mtime_ns == killed["round0_card"]
    assert hashlib.sha256(open(proposal_path(paths, 1), "rb").read()).hexdigest() == killed["proposal"]
    manifest = shards.require_manifest(paths.split("train"))
    assert manifest.shards[1].sha256 == killed["manifest"].shards[1].sha256
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    assert os.path.exists(paths.student_card)  # the last round's student is the run's


def test_scoring_sees_every_row_once(adapted):
    _, paths, _, _ = adapted
    manifest = shards.require_manifest(paths.split("train"))
    scored = score_split(paths.student_dir, paths.split("train"), batch_size=100, workers=2)
    places = set(zip(scored.rows["shard"].tolist(), scored.rows["row"].tolist()))
    assert len(scored.rows) == len(places) == manifest.rows == scored.metrics["samples"]
    assert sorted(scored.sample_ids.tolist()) == sorted(
        shards.read_split(paths.split("train"), manifest, ("sample_id",))["sample_id"].tolist())
    worst_first = ~scored.rows["mismatch"]
    assert (np.diff(worst_first.astype(int)) >= 0).all()  # disagreements first
