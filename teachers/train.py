"""Training a teacher on its seed dataset's real labels (the one place true labels are used)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from teachers.datasets import SeedData


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] → float [0, 1], the input every model in this project takes."""
    return images.float().div_(255)


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[start : start + batch_size]))
        correct += (model(x).argmax(1).numpy() == labels[start : start + batch_size]).sum()
    return float(correct) / len(images)


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def default_augment() -> Augment:
    affine = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    return lambda x, g: affine(x)


def train_teacher(
    model: nn.Module,
    data: SeedData,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    augment: Augment | None = None,
    mixup_alpha: float = 0.0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> float:
    """Train with soft cross-entropy, augmentation and optional mixup; return real test accuracy.

    `augment(x, generator)` should be the generator's own augmentation, so the teacher is
    well-behaved on the views it will later be asked to label. Mixup (Beta(alpha, alpha) blends of
    two images and their labels) makes it smooth between classes too, where a teacher that jumps
    is one no small student can copy."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    augment = augment or default_augment()
    beta = torch.distributions.Beta(mixup_alpha, mixup_alpha) if mixup_alpha > 0 else None
    num_classes = len(data.classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(data.train_images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    images = torch.from_numpy(data.train_images)
    labels = torch.from_numpy(data.train_labels)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images))
        total = 0.0
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            x = augment(to_float(images[idx]), g)
            y = F.one_hot(labels[idx], num_classes).float()
            if beta is not None:
                weight = beta.sample((len(idx), 1))
                partner = torch.randperm(len(idx), generator=g)
                x = weight.view(-1, 1, 1, 1) * x + (1 - weight.view(-1, 1, 1, 1)) * x[partner]
                y = weight * y + (1 - weight) * y[partner]
            loss = torch.sum(-y * F.log_softmax(model(x), dim=1), dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / len(images))
    model.eval()
    return accuracy(model, data.test_images, data.test_labels)
