"""Name → factory registries, shared by teachers and students.

A factory is registered once under one name (a second registration of the name is a bug and
raises), so configs can name architectures and tests can parametrize over every registered one.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch.nn as nn

# factory(input_shape=(C, H, W), num_outputs=K, **size) -> nn.Module taking float [B, C, H, W], returning [B, K]
Factory = Callable[..., nn.Module]


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Factory] = {}

    def register(self, name: str) -> Callable[[Factory], Factory]:
        def decorator(factory: Factory) -> Factory:
            if name in self._factories:
                raise ValueError(f"{self.kind} architecture {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def factory(self, name: str) -> Factory:
        if name not in self._factories:
            raise KeyError(f"unknown {self.kind} architecture {name!r}; expected one of: {', '.join(self.names())}")
        return self._factories[name]

    def build(self, name: str, **kwargs) -> nn.Module:
        return self.factory(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
