"""torch's intra-op thread count, set for a block and given back afterwards."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run the block on `threads` torch threads; the process's own setting is restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
