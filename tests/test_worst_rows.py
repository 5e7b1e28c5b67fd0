"""The worst held-out rows kept while scanning: merging the parts of a split (as the eval stage's
Ray tasks do) gives exactly the rows of one pass, whatever the batching and the dealing of shards."""

import torch

from pipeline import shards
from pipeline.evaluate.stage import evaluate_shards
from pipeline.tasks.worst import WorstRows, row_kl
from pipeline.run.rundir import RunPaths
from pipeline.train.student import build_student


def _batches(n: int, k: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(n, k, generator=g), torch.randn(n, k, generator=g) * 3
    teacher[:10] = student[:10]  # some rows with KL 0 and agreement: ties at the bottom
    return student, teacher, torch.randint(0, 255, (n, 1, 2, 2), dtype=torch.uint8, generator=g)


def _keys(worst: WorstRows) -> list[tuple]:
    return [(r["shard"], r["row"]) for r in worst.rows]


def test_parts_merge_to_the_single_pass():
    student, teacher, inputs = _batches(300)
    single = WorstRows(12)
    for start in range(0, 300, 64):  # shard 0, batches of 64
        single.update(student[start:start + 64], teacher[start:start + 64], inputs[start:start + 64], 0, "s0", start)
    halves = [WorstRows(12), WorstRows(12)]
    for start in range(0, 300, 50):  # the same rows dealt in other batches to two parts
        halves[(start // 50) % 2].update(student[start:start + 50], teacher[start:start + 50],
                                         inputs[start:start + 50], 0, "s0", start)
    merged = WorstRows(12).merge(halves[1]).merge(halves[0])
    assert _keys(merged) == _keys(single)
    kl, agrees = row_kl(student, teacher), student.argmax(1) == teacher.argmax(1)
    expected = sorted(range(300), key=lambda i: (bool(agrees[i]), -float(kl[i]), i))[:12]
    assert [r["row"] for r in single.rows] == expected
    first = single.rows[0]
    assert first["input"]["shape"] == [1, 2, 2] and first["teacher"][0][0] == int(teacher[first["row"]].argmax())


def test_fewer_rows_than_the_size_keeps_them_all():
    student, teacher, inputs = _batches(7)
    worst = WorstRows(16)
    worst.update(student, teacher, inputs, 3, "s3", 100)
    assert sorted(r["row"] for r in worst.rows) == list(range(100, 107))
    assert WorstRows(0).rows == []


def test_evaluators_dealt_different_shards_merge_to_one_pass(labeled_run):
    split_dir = RunPaths(labeled_run.out).split("train")
    manifest = shards.require_manifest(split_dir)
    torch.manual_seed(0)
    student = build_student("mlp", {"width": 16, "depth": 2}, manifest.input_shape, manifest.num_classes).eval()
    every = sorted(manifest.shards)
    single = evaluate_shards(student, split_dir, manifest, every, 100, 15, worst=8)
    parts = [evaluate_shards(student, split_dir, manifest, every[p::2], 100, 15, worst=8) for p in (1, 0)]
    merged = parts[0].merge(parts[1]).compute()
    assert merged["worst"] == single.compute()["worst"]
    assert merged["samples"] == manifest.rows and len(merged["worst"]) == 8
    assert "worst" not in evaluate_shards(student, split_dir, manifest, every, 100, 15).compute()
