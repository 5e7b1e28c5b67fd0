"""CPU inference latency of a model, measured the same way for the teacher, the student and every
student of a capacity sweep, so the figures compare.

The number of torch threads is fixed for the measurement (and the caller's restored after), a few
warm-up calls go untimed (the first calls allocate buffers and pick kernels), then REPEATS blocks
of calls are timed, each long enough that the clock's resolution does not matter, and the median
time per call over the blocks is reported: a block slowed by another process barely moves it.
"""

from __future__ import annotations

import statistics
import time

import torch

from pipeline.torch_threads import torch_threads

BATCH_SIZES = (1, 256)
WARMUP_CALLS = 3
REPEATS = 7


def _block_s(model, x, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        model(x)
    return time.perf_counter() - start


@torch.inference_mode()
def forward_ms(model, input_shape, batch_size: int, threads: int = 1, min_time_s: float = 0.5) -> dict:
    """Median milliseconds per forward pass of one batch on CPU, over REPEATS timed blocks that
    together take about `min_time_s`. `model` is a torch module (called on a tensor) or any teacher
    (called on a float32 numpy batch, as the pipeline calls it)."""
    x = torch.rand(batch_size, *input_shape, generator=torch.Generator().manual_seed(0))
    if isinstance(model, torch.nn.Module):
        model = model.eval()
    else:
        x = x.numpy()
    with torch_threads(threads):
        once = max(_block_s(model, x, WARMUP_CALLS) / WARMUP_CALLS, 1e-7)
        calls = max(1, round(min_time_s / REPEATS / once))
        per_call = [_block_s(model, x, calls) / calls for _ in range(REPEATS)]
    return {"ms": statistics.median(per_call) * 1e3, "repeats": REPEATS, "calls_per_repeat": calls}


def model_latency(model, input_shape, threads: int = 1, min_time_s: float = 0.5) -> dict:
    """{"batch1_ms": .., "batch256_ms": ..}: median milliseconds per call at each batch size."""
    return {f"batch{b}_ms": forward_ms(model, input_shape, b, threads, min_time_s)["ms"] for b in BATCH_SIZES}


def compare(teacher, student: torch.nn.Module, input_shape, threads: int = 1,
            min_time_s: float = 0.5) -> dict:
    """Teacher and student latency on CPU and the student's speed-up (teacher time / student time)."""
    t = model_latency(teacher, input_shape, threads, min_time_s)
    s = model_latency(student, input_shape, threads, min_time_s)
    speedup = {f"batch{b}": t[f"batch{b}_ms"] / s[f"batch{b}_ms"] for b in BATCH_SIZES}
    return {"teacher": t, "student": s, "speedup": speedup, "threads": threads, "device": "cpu",
            "method": f"median over {REPEATS} timed blocks of calls, after {WARMUP_CALLS} warm-up calls"}
