"""Where a shard's inputs are made: in a CPU task beside the teacher, or by the teacher's actor itself.

A `Generation` is a shard's generator call, not yet made (a pure function of its arguments, some of
which may be Ray object refs, e.g. the seed images put once). The label stage decides where it runs:
- teacher actors on GPUs: in a CPU task (`run_generation`), so generating the next shard overlaps
  the GPU labeling the current one;
- teacher actors on CPUs: in the actor, just before it labels. Its threads already keep the cores
  busy, and a generation task beside them only takes a core from the teacher mid-batch (every
  thread of a parallel op then waits for the one that lost its core), which costs the teacher more
  than the generating itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ray


@dataclass(frozen=True)
class Generation:
    make_inputs: Callable[..., tuple]  # (stored inputs, kinds[, recipes]) from args
    args: tuple

    def make(self) -> tuple:
        args = [ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in self.args]
        return self.make_inputs(*args)


# num_cpus=0: generation is light next to the teacher, and must never wait for a CPU that teacher
# actors hold. If a node is lost and its actor restarts on a node already full of actors, a
# generation task asking for a CPU would wait forever while the actors wait for its inputs.
@ray.remote(num_cpus=0)
def run_generation(generation: Generation) -> tuple:
    import torch

    torch.set_num_threads(1)  # generation is cheap; leave the cores to the teacher
    return generation.make()
