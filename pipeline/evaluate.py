"""The eval stage: how closely does the student copy the teacher?

On the training shards and the held-out shards (teacher logits read from the shards, every row once):
  top1  share of inputs where the student's top class is the teacher's top class
  top5  share where the teacher's top class is among the student's top 5
  kl    mean KL(teacher || student) of the softmax outputs at temperature 1, nats
On the real test split (never trained on): both accuracies, and the same agreement figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from torchmetrics import KLDivergence, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from pipeline import rundir, shards, storage
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.report import Report, write_report
from pipeline.teacher import load_seed, load_teacher
from pipeline.train import StudentCard, build_student
from teachers import accuracy, count_parameters, to_float

SPLITS = ("train", "heldout")


def agreement_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection({
        "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        "kl": KLDivergence(log_prob=True, reduction="mean"),
    })


def update(metrics: MetricCollection, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    target = teacher_logits.argmax(1)
    metrics["top1"].update(student_logits, target)
    metrics["top5"].update(student_logits, target)
    metrics["kl"].update(F.log_softmax(teacher_logits, 1), F.log_softmax(student_logits, 1))


def compute(metrics: MetricCollection, samples: int) -> dict:
    values = {k: float(v) for k, v in metrics.compute().items()}
    return {**values, "samples": samples}


@torch.inference_mode()
def agreement_on_shards(student: torch.nn.Module, split_dir: str, batch_size: int) -> dict:
    manifest = shards.require_manifest(split_dir)
    metrics, samples = agreement_metrics(manifest.num_classes), 0
    for batch in shards.iter_batches(split_dir, manifest, batch_size):
        x = to_float(batch["input"].view(-1, *manifest.input_shape))
        update(metrics, student(x), batch["logits"].float())
        samples += len(x)
    if samples == 0:
        return {"top1": None, "top5": None, "kl": None, "samples": 0}
    return compute(metrics, samples)


@torch.inference_mode()
def agreement_on_images(student: torch.nn.Module, teacher: torch.nn.Module, images, num_classes: int) -> dict:
    x = to_float(torch.from_numpy(images))
    metrics = agreement_metrics(num_classes)
    update(metrics, student(x), teacher(x).float())
    return compute(metrics, len(x))


def load_student(paths: rundir.RunPaths) -> tuple[torch.nn.Module, StudentCard]:
    if not storage.exists(paths.student_card):
        raise UserError(f"No trained student in {paths.root}: run the train stage first (expected {paths.student_card}).")
    card = StudentCard(**storage.read_json(paths.student_card))
    student = build_student(card.arch, card.width, card.depth, card.input_shape, len(card.classes))
    student.load_state_dict(load_safetensors(storage.read_bytes(paths.student_weights)))
    return student.eval(), card


def run_eval_stage(cfg: Config) -> Report:
    paths = rundir.prepare(cfg)
    teacher, teacher_card = load_teacher(paths)
    student, student_card = load_student(paths)
    if student_card.teacher_fingerprint != teacher_card.fingerprint:
        raise UserError(f"{paths.student_card} was trained on a different teacher's labels than {paths.teacher_card}.")
    seed = load_seed(cfg)
    agreement = {split: agreement_on_shards(student, paths.split(split), cfg.eval.batch_size) for split in SPLITS}
    agreement["test"] = agreement_on_images(student, teacher, seed.test_images, teacher_card.num_classes)
    rejected = {split: sum(r.rejected for r in shards.require_manifest(paths.split(split)).records())
                for split in SPLITS}
    report = Report(
        agreement=agreement,
        accuracy={"teacher": accuracy(teacher, seed.test_images, seed.test_labels),
                  "student": accuracy(student, seed.test_images, seed.test_labels),
                  "test_samples": len(seed.test_labels)},
        params={"teacher": count_parameters(teacher), "student": count_parameters(student)},
        teacher={"arch": teacher_card.arch, "fingerprint": teacher_card.fingerprint, "dataset": teacher_card.dataset},
        student={"arch": student_card.arch, "width": student_card.width, "depth": student_card.depth,
                 "epochs": student_card.epochs},
        rejected_rows=rejected,
        min_agreement=cfg.eval.min_agreement,
    )
    write_report(paths, report)
    return report
