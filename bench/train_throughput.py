"""Student training throughput: the shard data path against its ceiling.

    python bench/train_throughput.py                 # labels a data set in a temporary directory first
    python bench/train_throughput.py --out DIR       # reuses DIR's shards, or labels into DIR once

The default student at the default batch size trains through the stage's own Trainer
(pipeline.train.trainer.make_trainer) and DistillationModule, fed two ways:
  (a) memory: every row decoded into tensors beforehand; each epoch one shuffle, batches are views
      (the ceiling: no reading, no decoding);
  (b) shards: the Parquet shards through ShardStream and ResumableLoader, as the train stage reads them.
Both run --rounds times, alternating, each for --epochs epochs. Throughput is samples/s of one epoch
(data reload included); the first epoch of each run pays start-up and is left out, and the best epoch
of each path counts, because a shared machine only ever makes an epoch slower.
The last line is `train_ratio <b/a>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

import lightning as L
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline import shards  # noqa: E402
from pipeline.config import Config, DataConfig, LabelConfig, TeacherConfig, TrainConfig  # noqa: E402
from pipeline.run import rundir  # noqa: E402
from pipeline.train.data import ShardDataModule  # noqa: E402
from pipeline.train.trainer import build_module, loader_workers, make_trainer  # noqa: E402


class EpochTimer(L.Callback):
    """Seconds of each epoch after the first, from the end of the one before (data reloads included)."""

    def __init__(self):
        self.last, self.seconds = None, []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.seconds.append(now - self.last)
        self.last = now


class InMemory(L.LightningDataModule):
    def __init__(self, data: dict[str, torch.Tensor], batch_size: int, seed: int):
        super().__init__()
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.trainer.current_epoch)
        order = torch.randperm(len(self.data["input"]), generator=g)
        shuffled = {k: v[order] for k, v in self.data.items()}
        return Batches(shuffled, self.batch_size)


class Batches:
    """Consecutive batches of already shuffled tensors, as views (a list would be read by Lightning
    as several loaders)."""

    def __init__(self, data: dict[str, torch.Tensor], batch_size: int):
        self.data, self.batch_size = data, batch_size

    def __len__(self) -> int:
        return len(self.data["input"]) // self.batch_size

    def __iter__(self):
        for i in range(len(self)):
            yield {k: v[i * self.batch_size:(i + 1) * self.batch_size] for k, v in self.data.items()}


class ShardsOnly(ShardDataModule):
    def val_dataloader(self):
        return []  # the ceiling has no validation either: compare training alone


def bench_config(out: str) -> Config:
    """Default student and training settings; a small teacher and a modest data set (labeling is not measured)."""
    return Config(out=out, teacher=TeacherConfig(epochs=1), data=DataConfig(shards=8, heldout_shards=1),
                  label=LabelConfig(actors=1), train=TrainConfig(preflight=False))


def prepare(out: str | None) -> Config:
    from pipeline.label.stage import run_label_stage
    from pipeline.teach.stage import run_teacher_stage

    out = out or os.path.join(tempfile.mkdtemp(prefix="train-throughput-"), "run")
    if rundir.saved_config_path(out):
        from pipeline.__main__ import parse

        cfg = parse(["train", "--out", out])[1]
    else:
        cfg = bench_config(out)
    print(f"data: {out}", flush=True)
    run_teacher_stage(cfg)
    run_label_stage(cfg)
    return cfg


def measure(cfg: Config, manifest: shards.Manifest, data: L.LightningDataModule, epochs: int, student_dir: str,
            rows_per_epoch: int) -> list[float]:
    """Samples/s of each epoch after the first."""
    c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=epochs, checkpoint_every_steps=0))
    module = build_module(c, manifest, rows_per_epoch // c.train.batch_size)
    trainer = make_trainer(c, student_dir)
    timer = EpochTimer()
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=data)
    return [rows_per_epoch / s for s in timer.seconds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="run directory to reuse or create (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ADDRESS", "")  # labeling: the embedded local Ray

    cfg = prepare(args.out)
    paths = rundir.RunPaths(cfg.out)
    manifest = shards.require_manifest(paths.split("train"))
    batches = list(shards.iter_batches(paths.split("train"), manifest, 8192))
    memory = {k: torch.cat([b[k] for b in batches]) for k in ("input", "logits")}
    b = cfg.train.batch_size
    rows = (manifest.rows // b) * b
    print(f"student {cfg.student.arch} w{cfg.student.width} d{cfg.student.depth}, batch {b}, {rows:,} rows/epoch, "
          f"{args.epochs} epochs x {args.rounds} rounds, torch threads {torch.get_num_threads()}, "
          f"loader workers {loader_workers(cfg)}", flush=True)
    best = {"memory": 0.0, "shards": 0.0}
    round_ratios = []  # of medians, for a second opinion less swayed by one lucky epoch
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            a = measure(cfg, manifest, InMemory(memory, b, cfg.train.seed), args.epochs, scratch, rows)
            s = measure(cfg, manifest, ShardsOnly(paths, b, cfg.train.seed, loader_workers(cfg)), args.epochs, scratch, rows)
            best["memory"], best["shards"] = max(best["memory"], *a), max(best["shards"], *s)
            round_ratios.append(statistics.median(s) / statistics.median(a))
            print(f"round {r + 1}: (a) memory {max(a):,.0f} samples/s "
                  f"(best epoch; median {statistics.median(a):,.0f})   "
                  f"(b) shards {max(s):,.0f} (median {statistics.median(s):,.0f})", flush=True)
    print(f"best: (a) memory {best['memory']:,.0f} samples/s   (b) shards {best['shards']:,.0f} samples/s   "
          f"(median over rounds of the ratio of medians: {statistics.median(round_ratios):.3f})")
    print(f"train_ratio {best['shards'] / best['memory']:.3f}")


if __name__ == "__main__":
    main()
