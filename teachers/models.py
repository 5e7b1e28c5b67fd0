"""Teacher architectures. Inputs are float [B, C, H, W] in [0, 1]; outputs are raw logits [B, K]."""

from __future__ import annotations

import torch.nn as nn

from teachers.registry import Registry

TEACHERS = Registry("teacher")
register_teacher = TEACHERS.register


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@register_teacher("cnn")
def cnn(input_shape: tuple[int, int, int], num_outputs: int, width: int = 32) -> nn.Module:
    """A VGG-style CNN: three conv blocks (width, 2x, 4x), two poolings, a 2-layer head.

    Big enough to be an accurate, comparatively slow teacher on small images (~360k parameters at
    width 32 on 8x8 digits)."""
    channels = input_shape[0]
    return nn.Sequential(
        _conv_block(channels, width),
        _conv_block(width, 2 * width),
        nn.MaxPool2d(2),
        _conv_block(2 * width, 4 * width),
        nn.MaxPool2d(2),
        # Adaptive pooling makes the head independent of the input size (8x8 digits, 28x28, 32x32).
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * width * 4, 16 * width),
        nn.ReLU(inplace=True),
        nn.Linear(16 * width, num_outputs),
    )


@register_teacher("resnet18")
def resnet18(input_shape: tuple[int, int, int], num_outputs: int, width: int = 64) -> nn.Module:
    """torchvision's ResNet-18 (random init; load trained weights with teacher.checkpoint). Its width
    is fixed by the architecture; `width` is accepted for a uniform signature and ignored.

    For small inputs (≤ 64 px) the stem is a 3x3 stride-1 conv without max-pool, the usual CIFAR
    adaptation, so 32x32 images are not shrunk to 1x1 before the last stage."""
    import torchvision  # here, not at import: it takes seconds, and every Ray worker imports this module

    model = torchvision.models.resnet18(weights=None, num_classes=num_outputs)
    channels, height, _ = input_shape
    if height <= 64:
        model.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
    return model
