"""Student architectures: small, fast, and with no dropout anywhere (the student is meant to
memorise the teacher). Every factory takes (input_shape, num_classes, width, depth), so sizes can
be swept. Inputs are float [B, C, H, W] in [0, 1]; outputs are raw logits [B, K]."""

from __future__ import annotations

import math

import torch.nn as nn

from teachers.registry import Registry

STUDENTS = Registry("student")
register_student = STUDENTS.register

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def activation_layer(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@register_student("mlp")
def mlp(input_shape: tuple[int, int, int], num_outputs: int, width: int = 128, depth: int = 2,
        activation: str = "relu") -> nn.Module:
    """Flatten, then `depth` hidden layers of `width` units with `activation` (ReLU by default)."""
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(features, width), activation_layer(activation)]
        features = width
    layers.append(nn.Linear(features, num_outputs))
    return nn.Sequential(*layers)


@register_student("cnn")
def cnn(input_shape: tuple[int, int, int], num_outputs: int, width: int = 16, depth: int = 2,
        activation: str = "relu") -> nn.Module:
    """`depth` conv blocks of `width` channels (3x3 conv, ReLU; 2x2 max-pool while the map allows),
    global average pooling, one linear layer."""
    channels, height, _ = input_shape
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), activation_layer(activation)]
        if height >= 4:
            layers.append(nn.MaxPool2d(2))
            height //= 2
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_outputs)]
    return nn.Sequential(*layers)
