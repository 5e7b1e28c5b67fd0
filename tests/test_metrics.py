"""The metric registry: each kind against a value worked out by hand, and merging parts of a split
giving the value of one pass."""

import json
import math

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from pipeline.tasks.metrics import (
    METRICS, MetricKind, Outputs, SplitMetrics, kinds_for, per_class_agreement, register_metric, reliability_bins,
    top_confusions,
)

K = 4


def batch(n=64, seed=0, labeled=True, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    teacher = scale * torch.randn(n, K, generator=g)
    student = teacher + torch.randn(n, K, generator=g)  # a student that mostly, not always, agrees
    labels = torch.randint(0, K, (n,), generator=g) if labeled else None
    return Outputs(student, teacher, labels)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_kind_builds_updates_and_gives_plain_json(name):
    kind = METRICS[name]
    metric = kind.build(K, 10)
    kind.update(metric, batch())
    value = kind.value(metric)
    json.dumps(value)  # the report is JSON: every value must serialise as is
    if isinstance(value, float):
        assert math.isfinite(value) and value >= 0


def test_hand_worked_values():
    # Teacher's top classes: 0, 1, 2, 3. The student agrees on the first two; on the third its
    # second choice is the teacher's class, on the fourth its last choice.
    teacher = torch.tensor([[5., 0, 0, 0], [0, 5., 0, 0], [0, 0, 5., 0], [0, 0, 0, 5.]])
    student = torch.tensor([[4., 1, 0, 0], [0, 4., 1, 0], [0, 0, 1., 4], [0, 3, 2, 1.]])
    m = SplitMetrics(K, bins=10)
    m.update(Outputs(student, teacher))
    v = m.compute()
    assert v["top1"] == pytest.approx(0.5)
    assert v["samples"] == 4
    assert v["confusion"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    p, q = teacher.softmax(1), student.softmax(1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    mid = (p + q) / 2
    js = (0.5 * (p * (p / mid).log()).sum(1) + 0.5 * (q * (q / mid).log()).sum(1)).mean()
    assert v["kl"] == pytest.approx(float(kl), rel=1e-5)
    assert v["js"] == pytest.approx(float(js), rel=1e-5)
    assert 0 < v["js"] <= math.log(2)
    # ECE by hand: each sample's confidence is the student's top probability; it "is right" when it agrees.
    conf, pick = q.max(1)
    right = (pick == teacher.argmax(1)).float()
    bins = torch.clamp((conf * 10).long(), max=9)
    ece = sum(abs(float(right[bins == b].mean() - conf[bins == b].mean())) * int((bins == b).sum()) / 4
              for b in bins.unique())
    assert v["ece"]["ece"] == pytest.approx(ece, abs=1e-6)


def test_top5_counts_the_teachers_class_anywhere_in_the_students_top_k():
    teacher = torch.zeros(1, 8)
    teacher[0, 7] = 9.0
    student = torch.arange(8.0).flip(0).unsqueeze(0)  # the student ranks class 7 last
    m = SplitMetrics(8)
    m.update(Outputs(student, teacher))
    assert m.compute()["top5"] == 0.0
    student[0, 7] = 3.5  # now 5th of 8
    m = SplitMetrics(8)
    m.update(Outputs(student, teacher))
    assert m.compute()["top5"] == 1.0


def test_a_student_equal_to_its_teacher_agrees_fully():
    out = batch()
    m = SplitMetrics(K, labeled=True)
    m.update(Outputs(out.teacher.clone(), out.teacher, out.labels))
    v = m.compute()
    assert v["top1"] == v["top5"] == 1.0
    assert v["kl"] == pytest.approx(0.0, abs=1e-6) and v["js"] == pytest.approx(0.0, abs=1e-6)
    assert v["teacher_accuracy"] == v["student_accuracy"]
    assert v["teacher_ece"] == v["student_ece"]
    assert all(row[i] == sum(row) for i, row in enumerate(v["confusion"]))


def test_accuracy_kinds_compare_with_true_labels():
    out = batch(labeled=True)
    m = SplitMetrics(K, labeled=True)
    m.update(out)
    v = m.compute()
    assert v["teacher_accuracy"] == pytest.approx(float((out.teacher.argmax(1) == out.labels).float().mean()))
    assert v["student_accuracy"] == pytest.approx(float((out.student.argmax(1) == out.labels).float().mean()))


def test_labeled_kinds_only_where_there_are_labels():
    assert not any(METRICS[k].needs_labels for k in kinds_for(labeled=False))
    assert set(kinds_for(labeled=True)) == set(METRICS)
    with pytest.raises(ValueError):
        SplitMetrics(K, labeled=True).update(batch(labeled=False))


def test_merged_parts_equal_one_pass_and_count_every_sample_once():
    out = batch(n=100, seed=3)
    whole = SplitMetrics(K, labeled=True)
    whole.update(out)
    parts = [SplitMetrics(K, labeled=True) for _ in range(4)]
    for part, (lo, hi) in zip(parts, [(0, 30), (30, 30), (30, 71), (71, 100)]):  # one part is empty
        if hi > lo:
            part.update(Outputs(out.student[lo:hi], out.teacher[lo:hi], out.labels[lo:hi]))
    merged = SplitMetrics(K, labeled=True)
    for part in parts:
        merged.merge(part)
    a, b = whole.compute(), merged.compute()
    assert b["samples"] == 100
    assert a["confusion"] == b["confusion"]
    for name in ("top1", "top5", "kl", "js", "teacher_accuracy", "student_accuracy"):
        assert b[name] == pytest.approx(a[name], rel=1e-6, abs=1e-7), name
    for name in ("ece", "teacher_ece", "student_ece"):
        assert b[name]["ece"] == pytest.approx(a[name]["ece"], abs=1e-6), name
        assert b[name]["bins"]["count"] == a[name]["bins"]["count"]
    assert parts[0].compute()["samples"] == 30  # merging copies states; the parts are left as they were


def test_an_empty_split_gives_none_not_a_number():
    v = SplitMetrics(K).compute()
    assert v["samples"] == 0 and v["top1"] is None and v["kl"] is None


def test_calibration_takes_probabilities_even_when_raw_logits_fall_in_0_1():
    # torchmetrics softmaxes only inputs outside [0, 1]: raw logits inside it would be read as probabilities.
    g = torch.Generator().manual_seed(1)
    out = Outputs(torch.rand(50, K, generator=g), torch.rand(50, K, generator=g))
    m = SplitMetrics(K, bins=5)
    m.update(out)
    reference = MulticlassCalibrationError(K, n_bins=5)
    reference.update(out.student.softmax(1), out.teacher.argmax(1))
    assert m.compute()["ece"]["ece"] == pytest.approx(float(reference.compute()), abs=1e-6)
    assert max(c for c in m.compute()["ece"]["bins"]["confidence"] if c is not None) < 0.5  # softmax of 4 near-equal logits


def test_reliability_bins_reproduce_the_torchmetrics_ece():
    out = batch(n=500, seed=2, scale=1.0)
    metric = MulticlassCalibrationError(K, n_bins=8)
    metric.update(out.student.softmax(1), out.teacher.argmax(1))
    bins = reliability_bins(metric)
    assert sum(bins["count"]) == 500 and len(bins["count"]) == 8
    gap = sum(abs(a - c) * n / 500 for a, c, n in zip(bins["accuracy"], bins["confidence"], bins["count"]) if n)
    assert gap == pytest.approx(float(metric.compute()), abs=1e-6)


def test_per_class_agreement_and_top_confusions_from_a_matrix():
    confusion = [[8, 2, 0], [0, 0, 0], [1, 5, 4]]
    assert per_class_agreement(confusion) == [0.8, None, 0.4]
    assert top_confusions(confusion, ["a", "b", "c"], limit=2) == [
        {"teacher": "c", "student": "b", "count": 5}, {"teacher": "a", "student": "b", "count": 2}]


def test_per_class_agreement_averages_back_to_top1():
    m = SplitMetrics(K)
    m.update(batch(n=200, seed=5))
    v = m.compute()
    rows = [sum(r) for r in v["confusion"]]
    weighted = sum(a * n for a, n in zip(per_class_agreement(v["confusion"]), rows) if a is not None) / sum(rows)
    assert weighted == pytest.approx(v["top1"], abs=1e-6)


def test_the_registry_refuses_a_second_kind_of_the_same_name():
    with pytest.raises(ValueError, match="already registered"):
        register_metric(MetricKind("top1", "again", METRICS["top1"].build, METRICS["top1"].update,
                                   METRICS["top1"].value))
