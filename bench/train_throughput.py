"""Student training: the train stage as users run it against a plain PyTorch loop (the ceiling).

    python bench/train_throughput.py                 # labels the default run's data in a temporary directory first
    python bench/train_throughput.py --out DIR       # reuses DIR's shards, or labels into DIR once

Both train the run's student (same seeded initial weights, decoding, loss, fused Adam, schedule,
batch size and number of epochs) on the run's training rows:
  (a) ceiling: a plain loop over tensors already in memory: a seeded shuffle each epoch, a slice
      a step, nothing else (no reading, no validation, no checkpoints, no logging);
  (b) stage: `run_train_stage` on a fresh copy of the run directory, timed from the call to its
      return: reading the shards (and checking their checksums), the preflight, Lightning with
      the default validation, checkpoints, CSV log and progress bar, saving and the ONNX export.
The two alternate over --rounds rounds (a b, then b a, ...), so a machine that slows down midway
weighs on both. Each round gives a ratio a/b; the last line is `train_ratio <median of the
ratios>`, after their spread and both final training agreements (top-1 over each one's last epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline import shards  # noqa: E402
from pipeline.config import Config  # noqa: E402
from pipeline.run import rundir  # noqa: E402
from pipeline.train.trainer import build_module  # noqa: E402
from students.module import make_optimizer, make_schedule  # noqa: E402


def prepare(out: str | None) -> Config:
    """A labeled run: DIR's own (its recorded config), or the default run's data labeled once."""
    from pipeline.__main__ import parse
    from pipeline.label.stage import run_label_stage
    from pipeline.teach.stage import run_teacher_stage

    out = out or os.path.join(tempfile.mkdtemp(prefix="train-throughput-"), "run")
    cfg = parse(["train", "--out", out])[1] if rundir.saved_config_path(out) else Config(out=out)
    print(f"data: {out}", flush=True)
    run_teacher_stage(cfg)
    run_label_stage(cfg)
    return cfg


def plain_loop(cfg: Config, manifest: shards.Manifest, data: dict[str, torch.Tensor]) -> tuple[float, float, int]:
    """(seconds, training agreement over the last epoch, epochs) of the ceiling."""
    t = cfg.train
    b = t.batch_size
    steps = len(data["input"]) // b
    module = build_module(cfg, manifest, steps).train()
    optimizer = make_optimizer(module.student.parameters(), t.lr)
    schedule = make_schedule(optimizer, t.schedule, t.lr, steps * t.max_epochs)
    start = time.perf_counter()
    for epoch in range(t.max_epochs):
        order = torch.randperm(len(data["input"]), generator=torch.Generator().manual_seed(t.seed * 100_003 + epoch))
        agree = 0
        for i in range(steps):
            rows = order[i * b:(i + 1) * b]
            loss, agreeing = module.loss_and_agreement({k: v[rows] for k, v in data.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            agree += int(agreeing)
    return time.perf_counter() - start, agree / (steps * b), t.max_epochs


def stage(cfg: Config, scratch: str) -> tuple[float, float, int]:
    """(seconds, training agreement over the last epoch, epochs) of the train stage on a copy of the run."""
    from pipeline.train.stage import run_train_stage

    paths = rundir.RunPaths(cfg.out)
    copy = os.path.join(scratch, f"run-{time.monotonic_ns()}")
    shutil.copytree(cfg.out, copy, ignore=lambda d, names: ["student", rundir.CONFIG_NAME] if d == paths.root else [])
    cfg = dataclasses.replace(cfg, out=copy)
    rundir.record(cfg)  # the config as benchmarked (--epochs may differ from the run's)
    start = time.perf_counter()
    result = run_train_stage(cfg)
    seconds = time.perf_counter() - start
    shutil.rmtree(copy)
    return seconds, result.card.train_agreement, result.card.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="run directory to reuse or create (default: a temporary one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="epochs of both (default: the run's train.max_epochs)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_ADDRESS", "")  # labeling: the embedded local Ray

    cfg = prepare(args.out)
    if args.epochs:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=args.epochs))
    manifest = shards.require_manifest(rundir.RunPaths(cfg.out).split("train"))
    data = shards.read_split(rundir.RunPaths(cfg.out).split("train"), manifest)
    t = cfg.train
    print(f"student {cfg.student.arch} w{cfg.student.width} d{cfg.student.depth}, batch {t.batch_size}, "
          f"{manifest.rows:,} rows, {t.max_epochs} epochs x {args.rounds} rounds, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    ratios, runs = [], {"ceiling": [], "stage": []}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            order = ("ceiling", "stage") if r % 2 == 0 else ("stage", "ceiling")
            got = {}
            for kind in order:
                got[kind] = plain_loop(cfg, manifest, data) if kind == "ceiling" else stage(cfg, scratch)
                runs[kind].append(got[kind])
            ratios.append(got["ceiling"][0] / got["stage"][0])
            print(f"round {r + 1}: (a) ceiling {got['ceiling'][0]:.1f} s, agreement {got['ceiling'][1]:.4f}   "
                  f"(b) stage {got['stage'][0]:.1f} s, agreement {got['stage'][1]:.4f} ({got['stage'][2]} epochs)   "
                  f"ratio {ratios[-1]:.3f}", flush=True)
    median = {k: statistics.median(s for s, _, _ in v) for k, v in runs.items()}
    print(f"median: (a) ceiling {median['ceiling']:.1f} s, agreement {runs['ceiling'][-1][1]:.4f}   "
          f"(b) stage {median['stage']:.1f} s, agreement {runs['stage'][-1][1]:.4f}   "
          f"ratios {min(ratios):.3f}..{max(ratios):.3f}")
    print(f"train_ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
