"""How close does the label stage come to the teacher's own speed?

    python bench/label_throughput.py                         # default CNN teacher on 8x8 digits, 1M samples
    python bench/label_throughput.py --teacher resnet18      # a heavier teacher on 3x32x32 inputs
    python bench/label_throughput.py --samples 1000000       # memory stays flat as the run grows

Measures, in one run, on the same generated inputs and batch size:
  (a) ceiling: the teacher's raw forward pass in this process on all cores, samples/s
  (b) stage:   generate + label + write shards through Ray (the real stage, into a fresh run
               directory each time), samples/s
alternating over --rounds rounds (a b, then b a, ...), so load that comes and goes on a shared
machine weighs on both. Each round gives a ratio b/a; it prints them, their spread, bytes per sample
on disk, the peak RSS of the driver and of the Ray workers, and last `label_ratio <median ratio>`.
Ray is started before (b) is timed: start-up is not labeling throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import ray
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline import shards  # noqa: E402
from pipeline.config import Config, DataConfig, LabelConfig, TeacherConfig  # noqa: E402
from pipeline.inputs import images, space  # noqa: E402
from pipeline.inputs.images import generate_inputs, shard_seed  # noqa: E402
from pipeline.inputs.seeds import BUILT_IN, SeedData  # noqa: E402
from pipeline.label.stage import run_label_stage  # noqa: E402
from pipeline.run import rundir  # noqa: E402
from pipeline.teach.load import load_teacher  # noqa: E402
from pipeline.inputs.seeds import load_seed  # noqa: E402
from pipeline.teach.stage import run_teacher_stage  # noqa: E402
from teachers import TEACHERS, count_parameters, weights_to_bytes  # noqa: E402

TEACHERS_UNDER_TEST = {
    # name: (arch, width, seed dataset, input shape)
    "cnn": ("cnn", 32, "digits", (1, 8, 8)),
    "resnet18": ("resnet18", 64, "bench-rgb32", (3, 32, 32)),
}


def register_random_rgb32(classes: int) -> None:
    """Stand-in seed images for the heavier teacher: throughput does not depend on their content."""

    def load(root, test_fraction, seed) -> SeedData:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (2000, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, classes, 2000)
        return SeedData(images[:1600], labels[:1600], images[1600:], labels[1600:], [str(i) for i in range(classes)])

    BUILT_IN["bench-rgb32"] = load


class PeakRSS:
    """Samples the RSS of this process and of every process below it (the Ray workers) until stopped."""

    def __init__(self, interval_s: float = 0.2):
        self.driver = self.worker = self.workers_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def _run(self, interval_s: float) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.driver = max(self.driver, me.memory_info().rss)
            rss = []
            for child in me.children(recursive=True):
                try:
                    if "ray::" in " ".join(child.cmdline()[:1]):
                        rss.append(child.memory_info().rss)
                except psutil.Error:
                    pass
            if rss:
                self.worker = max(self.worker, max(rss))
                self.workers_total = max(self.workers_total, sum(rss))
            time.sleep(interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def ceiling(cfg: Config, paths: rundir.RunPaths, seed_images: np.ndarray, samples: int) -> float:
    """The teacher's forward pass alone, all cores, on generated inputs, in label.batch_size batches
    (decoded and called as a labeling actor calls it)."""
    teacher, card = load_teacher(paths)
    decode = space.numpy_decoder(images.NAME, card.input_shape)
    torch.set_num_threads(os.cpu_count() or 1)
    per_shard = cfg.data.samples_per_shard
    count = min(samples, 4 * per_shard)
    inputs = np.concatenate([
        generate_inputs(seed_images, cfg.data, shard_seed(cfg.data.seed, "train", i), per_shard)[0]
        for i in range(-(-count // per_shard))
    ])[:count]
    batch = cfg.label.batch_size
    with torch.inference_mode():
        teacher(decode(inputs[:batch]))  # warm-up
        start = time.perf_counter()
        for lo in range(0, len(inputs), batch):
            teacher(decode(inputs[lo : lo + batch]))
        return len(inputs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", choices=sorted(TEACHERS_UNDER_TEST), default="cnn")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples-per-shard", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=10, help="Classes of the resnet18 teacher's stand-in data")
    parser.add_argument("--top-k", type=int, default=None, help="Store only the top-k logits (label.top_k)")
    parser.add_argument("--out", default=None, help="Run directory (default: a temporary one)")
    args = parser.parse_args()
    register_random_rgb32(args.classes)

    arch, width, dataset, shape = TEACHERS_UNDER_TEST[args.teacher]
    out = args.out or tempfile.mkdtemp(prefix="label-bench-")
    # A randomly initialised teacher, imported as a user's checkpoint: speed does not depend on training.
    classes = 10 if dataset == "digits" else args.classes
    model = TEACHERS.build(arch, input_shape=shape, num_outputs=classes, width=width)
    checkpoint = os.path.join(out, "bench-teacher.safetensors")
    os.makedirs(out, exist_ok=True)
    with open(checkpoint, "wb") as f:
        f.write(weights_to_bytes(model))
    def config(round_: int) -> Config:
        return Config(
            out=os.path.join(out, f"run-{round_}"),
            teacher=TeacherConfig(arch=arch, width=width, dataset=dataset, checkpoint=checkpoint),
            data=DataConfig(shards=-(-args.samples // args.samples_per_shard),
                            samples_per_shard=args.samples_per_shard, heldout_shards=0),
            label=LabelConfig(batch_size=args.batch_size, top_k=args.top_k),
        )

    cfg = config(0)
    run_teacher_stage(cfg)
    paths = rundir.RunPaths(cfg.out)
    seed = load_seed(cfg)

    def stage(round_: int):
        round_cfg = config(round_)
        run_teacher_stage(round_cfg)  # imports the same checkpoint
        torch.set_num_threads(1)  # the driver only schedules while the stage runs
        ray.init(address="local", include_dashboard=False, logging_level="ERROR")
        try:
            start = time.perf_counter()
            result = run_label_stage(round_cfg)
            elapsed = time.perf_counter() - start
        finally:
            ray.shutdown()
        return result, elapsed

    ratios, ceilings, stages = [], [], []
    with PeakRSS() as rss:
        for r in range(args.rounds):
            for kind in (("ceiling", "stage") if r % 2 == 0 else ("stage", "ceiling")):
                if kind == "ceiling":
                    ceilings.append(ceiling(cfg, paths, seed.train_images, args.samples))
                else:
                    result, elapsed = stage(r)
                    stages.append(result.splits["train"].rows / elapsed)
            ratios.append(stages[-1] / ceilings[-1])
            print(f"round {r + 1}: (a) ceiling {ceilings[-1]:,.0f} samples/s   (b) stage {stages[-1]:,.0f} "
                  f"samples/s   ratio {ratios[-1]:.3f}", flush=True)
    ceiling_sps, stage_sps = statistics.median(ceilings), statistics.median(stages)

    split = result.splits["train"]
    manifest = shards.require_manifest(split.split_dir)
    mb = 1 / 2**20
    print(f"teacher                 {args.teacher} {shape}, {classes} classes, "
          f"{count_parameters(model):,} params, logits stored: {args.top_k or 'all'}")
    print(f"samples                 {split.rows:,} in {split.shards} shards, batch {args.batch_size}, {os.cpu_count()} cores")
    print(f"ceiling_samples_per_s   {ceiling_sps:,.0f}  (median of {len(ceilings)})")
    print(f"stage_samples_per_s     {stage_sps:,.0f}  (median of {len(stages)})")
    print(f"ratios                  {', '.join(f'{r:.3f}' for r in ratios)}  (spread {min(ratios):.3f}..{max(ratios):.3f})")
    print(f"bytes_per_sample        {sum(r.bytes for r in manifest.records()) / manifest.rows:.1f}")
    print(f"peak_rss_driver_mb      {rss.driver * mb:,.0f}")
    print(f"peak_rss_worker_mb      {rss.worker * mb:,.0f}  (largest single Ray worker)")
    print(f"peak_rss_workers_mb     {rss.workers_total * mb:,.0f}  (all Ray processes together)")
    print(f"label_ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
