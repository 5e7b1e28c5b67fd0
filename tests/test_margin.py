"""The top-1 margin hinge: zero for a student that matches the teacher, and it makes near-ties learnable."""

from __future__ import annotations

import torch

from students.losses import kl_loss, top1_margin_hinge


def near_ties(rows: int = 256, classes: int = 10, gap: float = 0.02) -> torch.Tensor:
    """Teacher logits whose top two classes are `gap` apart on every row."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, classes, generator=g)
    top2 = logits.topk(2, dim=1)
    runner_up = top2.indices[:, 1:]
    return logits.scatter(1, runner_up, top2.values[:, :1] - gap)


def test_zero_for_a_student_that_matches_the_teacher():
    teacher = near_ties()
    assert float(top1_margin_hinge(teacher.clone(), teacher)) == 0.0
    swapped = teacher.clone()
    top2 = teacher.topk(2, dim=1).indices
    swapped.scatter_(1, top2, teacher.gather(1, top2.flip(1)))  # top two classes exchanged
    assert float(top1_margin_hinge(swapped, teacher)) > 0.0


def training_agreement(margin_weight: float, steps: int = 300) -> float:
    """A student too small to match its teacher (a random two-layer network) on 2,048 inputs:
    the top-1 agreement it reaches on them, fitted full-batch with KL plus the hinge."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 16, generator=g)
    teacher = torch.tanh(x @ torch.randn(16, 64, generator=g)) @ (torch.randn(64, 10, generator=g) / 8)
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = student(x)
        loss = kl_loss(logits, teacher, 1.0) + margin_weight * top1_margin_hinge(logits, teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((student(x).argmax(1) == teacher.argmax(1)).float().mean())


def test_with_capacity_to_share_the_hinge_spends_it_on_the_teachers_top_class():
    """KL alone trades the order of close classes for the fit of the others' logits; measured
    with these seeds: 0.72 agreement with KL alone, 0.82 with the hinge."""
    assert training_agreement(margin_weight=1.0) >= training_agreement(margin_weight=0.0) + 0.05


def test_on_by_default_for_active_rounds_only():
    from pipeline.config import AdaptConfig, Config, TrainConfig

    assert Config(out="x").margin_weight == 0.0
    assert Config(out="x", adapt=AdaptConfig(rounds=2)).margin_weight == 1.0
    assert Config(out="x", adapt=AdaptConfig(rounds=2), train=TrainConfig(margin_weight=0.0)).margin_weight == 0.0
    assert Config(out="x", train=TrainConfig(margin_weight=0.5)).margin_weight == 0.5
