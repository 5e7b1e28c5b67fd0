"""Training a teacher on its seed dataset's real labels (the one place true labels are used).

Inputs arrive in their stored form (uint8 images) with `decode`, the input space's conversion to
the float tensors models take; nothing here assumes how inputs are stored."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

Decode = Callable[[torch.Tensor], torch.Tensor]  # stored inputs -> float model inputs


def accuracy(predict: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, labels: np.ndarray,
             batch_size: int = 1024) -> float:
    """Share of `inputs` (float, as models take them) whose top output is the label."""
    correct = 0
    for start in range(0, len(inputs), batch_size):
        correct += (predict(inputs[start : start + batch_size]).argmax(1) == labels[start : start + batch_size]).sum()
    return float(correct) / len(inputs)


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def default_augment() -> Augment:
    from torchvision.transforms import v2  # here, not at import: torchvision takes seconds to import

    affine = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    return lambda x, g: affine(x)


def train_teacher(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    decode: Decode,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    augment: Augment | None = None,
    mixup_alpha: float = 0.0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train with soft cross-entropy, augmentation and optional mixup; return the model in eval mode.

    `augment(x, generator)` should be the generator's own augmentation, so the teacher is
    well-behaved on the views it will later be asked to label. Mixup (Beta(alpha, alpha) blends of
    two images and their labels) makes it smooth between classes too, where a teacher that jumps
    is one no small student can copy."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    augment = augment or default_augment()
    beta = torch.distributions.Beta(mixup_alpha, mixup_alpha) if mixup_alpha > 0 else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    images = torch.from_numpy(images)
    labels = torch.from_numpy(labels)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images))
        total = 0.0
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            x = augment(decode(images[idx]), g)
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
    return model.eval()
