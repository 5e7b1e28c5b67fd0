"""Latency measurement: its shape and its promises (threads fixed and restored, speed-up consistent).
No timing is asserted: figures depend on the machine."""

import torch

from pipeline.evaluate import latency
from students import STUDENTS


def model(width):
    return STUDENTS.build("mlp", input_shape=(1, 8, 8), num_outputs=10, width=width, depth=2)


def test_forward_ms_uses_the_given_threads_and_restores_the_callers(monkeypatch):
    seen = []
    net = model(16)
    original = net.forward
    monkeypatch.setattr(net, "forward", lambda x: (seen.append(torch.get_num_threads()), original(x))[1])
    torch.set_num_threads(2)
    result = latency.forward_ms(net, (1, 8, 8), batch_size=4, threads=1, min_time_s=0.01)
    assert set(seen) == {1}
    assert torch.get_num_threads() == 2
    assert result["ms"] > 0 and result["repeats"] == latency.REPEATS
    # warm-up calls plus every timed call
    assert len(seen) == latency.WARMUP_CALLS + latency.REPEATS * result["calls_per_repeat"]


def test_forward_ms_times_the_requested_batch_size(monkeypatch):
    sizes = set()
    net = model(16)
    original = net.forward
    monkeypatch.setattr(net, "forward", lambda x: (sizes.add(x.shape[0]), original(x))[1])
    latency.forward_ms(net, (1, 8, 8), batch_size=256, min_time_s=0.01)
    assert sizes == {256}


def test_compare_reports_both_models_at_both_batch_sizes_and_the_speedup():
    result = latency.compare(model(64), model(8), (1, 8, 8), threads=1, min_time_s=0.01)
    for who in ("teacher", "student"):
        assert set(result[who]) == {"batch1_ms", "batch256_ms"}
        assert all(v > 0 for v in result[who].values())
    for b in (1, 256):
        assert result["speedup"][f"batch{b}"] == result["teacher"][f"batch{b}_ms"] / result["student"][f"batch{b}_ms"]
    assert result["threads"] == 1
