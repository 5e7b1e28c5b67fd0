"""Reading shards: a streaming, shuffling, DDP-aware dataset for training, and an exact pass for eval.

Training (`ShardStream`)
  The unit of work is a Parquet row group. Each epoch, the row groups are put in a seeded random
  order and the rows inside each are permuted: concatenated, that is one virtual sequence holding
  every row once. Rank r takes the r-th equal slice of it, cut to whole batches, so every rank yields
  exactly the same number of batches (uneven iterable data makes DDP hang), and at most
  world_size * batch_size - 1 rows per epoch are left out. Inside a rank, each DataLoader worker
  takes a contiguous run of that rank's batches, so no two workers read the same rows and each
  reads only the row groups under its run. Nothing is loaded whole: memory is a row group or two.

Evaluation (`iter_batches`)
  Every row of every committed shard once, in manifest order, the last batch possibly short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline import storage
from pipeline.errors import UserError
from pipeline.shards.manifest import Manifest, ShardRecord
from pipeline.shards.schema import fixed_list_to_numpy

DEFAULT_COLUMNS = ("input", "logits")


@dataclass(frozen=True)
class RowGroup:
    path: str  # full path or URI of the shard
    index: int  # row group index within the shard
    rows: int


def open_shard(split_dir: str, record: ShardRecord) -> pq.ParquetFile:
    """Open a committed shard, refusing one whose size differs from the manifest's record."""
    path = storage.join(split_dir, record.path)
    fs, p = storage.resolve(path)
    try:
        size = fs.get_file_info(p).size
        if size is None:
            raise FileNotFoundError(path)
        if size != record.bytes:
            raise UserError(f"Shard {path} has {size} bytes where the manifest records {record.bytes}: it was "
                            "truncated or altered after commit (run `python -m pipeline verify`).")
        return pq.ParquetFile(fs.open_input_file(p))
    except FileNotFoundError as exc:
        raise UserError(f"Shard {path} is recorded in the manifest but missing on disk.") from exc
    except UserError:
        raise
    except Exception as exc:  # pyarrow: ArrowInvalid "Parquet magic bytes not found" and the like
        raise UserError(f"Shard {path} cannot be read as Parquet ({exc}).") from exc


def columns_to_tensors(table, columns: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {}
    for name in columns:
        column = table.column(name)
        array = fixed_list_to_numpy(column) if name in ("input", "logits") else column.to_numpy()
        # Arrow's buffers are read-only; torch wants writable memory, so take a (cheap) copy.
        out[name] = torch.from_numpy(np.array(array, copy=True))
    return out


def row_groups(split_dir: str, manifest: Manifest) -> list[RowGroup]:
    groups = []
    for record in manifest.records():
        path = storage.join(split_dir, record.path)
        full, last = divmod(record.rows, manifest.row_group_size)
        groups += [RowGroup(path, i, manifest.row_group_size) for i in range(full)]
        if last:
            groups.append(RowGroup(path, full, last))
    return groups


class ShardStream(IterableDataset):
    """Shuffled batches of shard rows for one DDP rank; see the module docstring for the plan."""

    def __init__(self, split_dir: str, manifest: Manifest, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, columns: Sequence[str] = DEFAULT_COLUMNS):
        self.split_dir, self.manifest = split_dir, manifest
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.columns = tuple(columns)
        self.groups = row_groups(split_dir, manifest)
        self.records = {storage.join(split_dir, r.path): r for r in manifest.records()}
        self.epoch = 0
        if len(self) == 0:
            raise UserError(f"{split_dir} holds {manifest.rows} rows, fewer than one batch of {batch_size} for each "
                            f"of {world_size} rank(s): lower train.batch_size or generate more data.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank)."""
        return (self.manifest.rows // self.world_size) // self.batch_size

    def plan(self, worker: int = 0, num_workers: int = 1) -> tuple[list[RowGroup], list[np.ndarray], int, int]:
        """This epoch's row-group order and row permutations, and the [start, stop) rows of the virtual
        sequence that (rank, worker) reads."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = [self.groups[i] for i in rng.permutation(len(self.groups))]
        perms = [rng.permutation(g.rows) for g in order]
        batches = len(self)
        first = worker * batches // num_workers
        last = (worker + 1) * batches // num_workers
        rank_start = self.rank * batches * self.batch_size
        return order, perms, rank_start + first * self.batch_size, rank_start + last * self.batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        order, perms, start, stop = self.plan(worker, num_workers)
        files: dict[str, pq.ParquetFile] = {}
        pending: list[dict[str, torch.Tensor]] = []
        pending_rows = 0
        offset = 0  # position of the current row group in the virtual sequence
        for group, perm in zip(order, perms):
            lo, hi = max(start, offset), min(stop, offset + group.rows)
            offset += group.rows
            if lo >= hi:
                if offset >= stop:
                    break
                continue
            if group.path not in files:
                files[group.path] = open_shard(self.split_dir, self.records[group.path])
            table = files[group.path].read_row_group(group.index, columns=list(self.columns))
            take = torch.from_numpy(perm[lo - (offset - group.rows): hi - (offset - group.rows)])
            pending.append({k: v[take] for k, v in columns_to_tensors(table, self.columns).items()})
            pending_rows += len(take)
            while pending_rows >= self.batch_size:
                merged = {k: torch.cat([p[k] for p in pending]) for k in self.columns}
                yield {k: v[: self.batch_size] for k, v in merged.items()}
                rest = {k: v[self.batch_size:] for k, v in merged.items()}
                pending, pending_rows = [rest], pending_rows - self.batch_size
        # The slice holds a whole number of batches, so nothing is left over here.


def iter_batches(split_dir: str, manifest: Manifest, batch_size: int,
                 columns: Sequence[str] = DEFAULT_COLUMNS) -> Iterator[dict[str, torch.Tensor]]:
    """Every committed row exactly once, in manifest order."""
    for record in manifest.records():
        shard = open_shard(split_dir, record)
        for batch in shard.iter_batches(batch_size=batch_size, columns=list(columns)):
            yield columns_to_tensors(batch, columns)
