"""The teacher stage: train a teacher on the seed dataset, or bring in a user's checkpoint.

Output: DIR/teacher/teacher.safetensors and DIR/teacher/teacher.json (the card). The card is
written last, so its presence means the teacher is complete; a rerun reuses it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from pipeline import rundir, storage
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.generate import augment
from teachers import (
    TEACHERS, SeedData, TeacherCard, accuracy, build_teacher, count_parameters, fingerprint_of, load_seed_dataset,
    train_teacher, weights_to_bytes,
)


@dataclass
class TeacherResult:
    weights: str
    card: TeacherCard
    action: str  # "trained", "imported" or "reused"


def load_seed(cfg: Config) -> SeedData:
    t = cfg.teacher
    try:
        return load_seed_dataset(t.dataset, t.data_root, t.test_fraction, t.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def load_teacher(paths: rundir.RunPaths) -> tuple[nn.Module, TeacherCard]:
    """The run's teacher, rebuilt and checked against its fingerprint."""
    if not storage.exists(paths.teacher_card):
        raise UserError(f"No teacher in {paths.root}: run the teacher stage first (expected {paths.teacher_card}).")
    card = TeacherCard.from_dict(storage.read_json(paths.teacher_card), paths.teacher_card)
    weights = storage.read_bytes(paths.teacher_weights)
    if fingerprint_of(weights) != card.fingerprint:
        raise UserError(f"{paths.teacher_weights} does not match the fingerprint in {paths.teacher_card}: "
                        "the teacher was changed after it was saved.")
    try:
        return build_teacher(card, weights, paths.teacher_weights), card
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def _check_fits(card: TeacherCard, seed: SeedData, source: str) -> None:
    if list(card.input_shape) != list(seed.input_shape) or card.num_classes != len(seed.classes):
        raise UserError(
            f"{source} expects inputs {list(card.input_shape)} and {card.num_classes} classes, but dataset "
            f"{card.dataset or 'configured'} has inputs {list(seed.input_shape)} and {len(seed.classes)} classes."
        )


def _import_checkpoint(cfg: Config, seed: SeedData) -> tuple[bytes, TeacherCard]:
    """A user's teacher: weights from teacher.checkpoint, the card beside it or from the config."""
    path = cfg.teacher.checkpoint
    if not storage.exists(path):
        raise UserError(f"teacher.checkpoint {path} does not exist; expected a .safetensors (or .pt) teacher file.")
    weights = storage.read_bytes(path)
    card_path = os.path.splitext(path)[0] + ".json"
    if storage.exists(card_path):
        card = TeacherCard.from_dict(storage.read_json(card_path), card_path)
    else:
        card = TeacherCard(arch=cfg.teacher.arch, width=cfg.teacher.width, input_shape=list(seed.input_shape),
                           classes=seed.classes)
    card.dataset = cfg.teacher.dataset
    _check_fits(card, seed, f"teacher.checkpoint {path}")
    try:
        model = build_teacher(card, weights, path)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    card.test_accuracy = accuracy(model, seed.test_images, seed.test_labels)
    return weights, card


def _train(cfg: Config, seed: SeedData) -> tuple[bytes, TeacherCard]:
    t = cfg.teacher
    if t.arch not in TEACHERS:
        raise UserError(f"teacher.arch {t.arch!r} is unknown; expected one of: {', '.join(TEACHERS.names())}.")
    torch.manual_seed(t.seed)  # the initial weights too: the same config trains the same teacher
    model = TEACHERS.build(t.arch, input_shape=seed.input_shape, num_classes=len(seed.classes), width=t.width)
    bar = tqdm(total=t.epochs, desc=f"teacher {t.arch} ({count_parameters(model):,} params)", unit="epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    test_accuracy = train_teacher(model, seed, t.epochs, t.batch_size, t.lr, t.seed,
                                  augment=lambda x, g: augment(x, g, cfg.data), mixup_alpha=t.mixup_alpha,
                                  on_epoch=on_epoch)
    bar.close()
    card = TeacherCard(arch=t.arch, width=t.width, input_shape=list(seed.input_shape), classes=seed.classes,
                       test_accuracy=test_accuracy, dataset=t.dataset)
    return weights_to_bytes(model), card


def run_teacher_stage(cfg: Config) -> TeacherResult:
    paths = rundir.prepare(cfg, create=True)
    if storage.exists(paths.teacher_card):
        _, card = load_teacher(paths)
        return TeacherResult(paths.teacher_weights, card, "reused")
    seed = load_seed(cfg)
    weights, card = _import_checkpoint(cfg, seed) if cfg.teacher.checkpoint else _train(cfg, seed)
    card.fingerprint = fingerprint_of(weights)
    rundir.record(cfg)
    storage.write_bytes_atomic(paths.teacher_weights, weights)
    storage.write_bytes_atomic(paths.teacher_card, (json.dumps(card.to_dict(), indent=2) + "\n").encode())
    return TeacherResult(paths.teacher_weights, card, "imported" if cfg.teacher.checkpoint else "trained")
