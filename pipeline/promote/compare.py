"""Challenger against champion, on the same inputs: the challenger's held-out shards.

Those shards were labeled by the challenger's teacher and no student trained on them, so both
students are scored against the same targets on the same rows, through the eval stage's own code
(pipeline.evaluate.stage.evaluate_shards). A changed teacher is then the judge of both: a champion
that copied the old teacher less well than the challenger copies the new one loses its place.

Compared figure: held-out top-1 agreement (classification, higher is better) or the held-out
relative L2 error at a quantile (regression, lower is better). A champion that takes other inputs or
gives other outputs than the challenger's shards hold cannot be compared: that is the user's error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pipeline import shards
from pipeline.errors import UserError
from pipeline.evaluate.stage import evaluate_shards
from pipeline.run.rundir import RunPaths
from pipeline.tasks import get_task
from pipeline.train.student import StudentCard

CALIBRATION_BINS = 15  # the eval stage's default; calibration is recorded, not compared


@dataclass
class Score:
    """One student's held-out figures on the compared inputs."""

    value: float  # the compared figure
    metrics: dict  # the scalar metrics (classification: top1, top5, kl, js; regression: rel_l2, r2_mean, ...)


@dataclass
class Verdict:
    promote: bool
    reason: str  # one sentence: why the challenger was refused, or what it was compared with


def figure_name(task: str, quantile: str) -> str:
    return get_task(task).headline(quantile).name


def heldout_manifest(run: RunPaths, card: StudentCard) -> shards.Manifest:
    """The challenger's held-out shards: complete, not empty, labeled by the teacher its student copies."""
    split_dir = run.split("heldout")
    manifest = shards.require_manifest(split_dir)
    if not manifest.rows:
        raise UserError(f"{split_dir} holds no held-out rows to compare students on: "
                        "label the run with data.heldout_shards of at least 1.")
    if card.teacher_fingerprint != manifest.teacher_fingerprint:
        raise UserError(f"{run.student_card} was trained on another teacher's labels than {split_dir} holds: "
                        "the run's student and shards do not belong together.")
    return manifest


def check_comparable(champion: StudentCard, manifest: shards.Manifest, name: str, split_dir: str) -> None:
    """The champion must take the inputs and give the outputs that the challenger's shards hold."""
    ours = (champion.task, champion.input_space, list(champion.input_shape), champion.num_outputs)
    theirs = (manifest.task, manifest.input_space, list(manifest.input_shape), manifest.num_classes)
    names = [p["name"] for p in champion.parameters or []], [p["name"] for p in manifest.parameters or []]
    if ours != theirs or names[0] != names[1]:
        raise UserError(f"the champion {name} ({ours[0]}, {ours[1]} {ours[2]} -> {ours[3]} outputs) cannot be "
                        f"compared on {split_dir} ({theirs[0]}, {theirs[1]} {theirs[2]} -> {theirs[3]} outputs): "
                        "promote this run into another registry.")


def score(student: torch.nn.Module, card: StudentCard, split_dir: str, manifest: shards.Manifest,
          batch_size: int, quantile: str) -> Score:
    # Each student decodes the stored inputs as it was trained to: a vector student scales by its own box.
    own = dataclasses.replace(manifest, parameters=card.parameters) if card.parameters else manifest
    values = evaluate_shards(student, split_dir, own, sorted(manifest.shards), batch_size, CALIBRATION_BINS).compute()
    task = get_task(manifest.task)
    return Score(task.headline_value(values, quantile), task.scalar_metrics(values))


def decide(task: str, challenger: Score, champion: Score | None, champion_name: str | None, tolerance: float,
           min_agreement: float | None, max_rel_error: float | None, quantile: str) -> Verdict:
    """The gate first (an absolute bar), then the champion (no worse than it by more than `tolerance`,
    in the units of the compared figure)."""
    kind = get_task(task)
    figure = kind.headline(quantile)
    value, show = challenger.value, kind.format_value
    stays = f"{champion_name} stays current" if champion_name else "the registry stays empty"
    bar = kind.gate_bar(min_agreement, max_rel_error)
    if bar is not None and not figure.better_or_equal(value, bar):
        side = "below" if figure.higher_is_better else "above"
        return Verdict(False, f"the challenger's {figure.name} {show(value)} is {side} {kind.bar_option()} {bar}; {stays}.")
    if champion is None:
        return Verdict(True, f"{figure.name} {show(value)}, the first version")
    other = champion.value
    samples = challenger.metrics["samples"]
    if figure.worse_by_more_than(value, other, tolerance):
        side = "below" if figure.higher_is_better else "above"
        return Verdict(False, f"the challenger's {figure.name} {show(value)} is {side} the champion {champion_name}'s "
                              f"{show(other)} on the same {samples:,} inputs by more than --tolerance {tolerance}; {stays}.")
    return Verdict(True, f"{figure.name} {show(value)} against the champion {champion_name}'s "
                         f"{show(other)} on the same {samples:,} inputs")
