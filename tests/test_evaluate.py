"""Evaluation covers every committed row exactly once, in one process or spread over Ray tasks, and
the merged metrics equal a single-process pass."""

import pytest
import torch
from safetensors.torch import save as save_safetensors

from pipeline import shards
from pipeline.evaluate.stage import assign_shards, evaluate_split
from pipeline.run.rundir import RunPaths
from pipeline.train.student import StudentCard, build_student


def random_student(manifest):
    torch.manual_seed(0)
    student = build_student("mlp", {"width": 16, "depth": 2}, manifest.input_shape, manifest.num_classes).eval()
    card = StudentCard(arch="mlp", kwargs={"width": 16, "depth": 2}, input_shape=list(manifest.input_shape),
                       classes=[str(i) for i in range(manifest.num_classes)], params=0,
                       teacher_fingerprint=manifest.teacher_fingerprint, epochs=0, steps=0,
                       train_agreement=None, heldout_agreement=None)
    weights = save_safetensors({k: v.contiguous() for k, v in student.state_dict().items()})
    return student, card, weights


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_every_shard_goes_to_exactly_one_part(labeled_run, parts):
    manifest = shards.require_manifest(RunPaths(labeled_run.out).split("train"))
    assigned = [i for p in range(parts) for i in assign_shards(manifest, p, parts)]
    assert sorted(assigned) == sorted(manifest.shards)


def test_ray_tasks_see_every_row_once_and_merge_to_the_single_pass(labeled_run, ray_local):
    split_dir = RunPaths(labeled_run.out).split("train")
    manifest = shards.require_manifest(split_dir)
    assert len(manifest.shards) >= 3  # so two tasks get unequal numbers of shards
    student, card, weights = random_student(manifest)
    single = evaluate_split(student, card, weights, split_dir, batch_size=100).compute()
    spread = evaluate_split(student, card, ray_local.put(weights), split_dir, batch_size=100, workers=2).compute()
    assert single["samples"] == spread["samples"] == manifest.rows
    assert sum(map(sum, spread["confusion"])) == manifest.rows
    assert spread["confusion"] == single["confusion"]
    for name in ("top1", "top5", "kl", "js"):
        assert spread[name] == pytest.approx(single[name], rel=1e-6), name
    assert spread["ece"]["ece"] == pytest.approx(single["ece"]["ece"], abs=1e-6)
    assert spread["ece"]["bins"]["count"] == single["ece"]["bins"]["count"]


def test_more_workers_than_shards_still_counts_each_row_once(labeled_run, ray_local):
    split_dir = RunPaths(labeled_run.out).split("heldout")
    manifest = shards.require_manifest(split_dir)
    student, card, weights = random_student(manifest)
    result = evaluate_split(student, card, weights, split_dir, batch_size=64, workers=8).compute()
    assert result["samples"] == manifest.rows
