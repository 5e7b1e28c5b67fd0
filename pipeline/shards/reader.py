"""Reading shards: a streaming, shuffling, DDP-aware dataset for training, and an exact pass for eval.

Training (`ShardStream`)
  The unit of work is a Parquet row group. Each epoch, the row groups are put in a seeded random
  order and the rows inside each are permuted: concatenated, that is one virtual sequence holding
  every row once. Rank r takes the r-th equal slice of it, cut to whole batches, so every rank yields
  exactly the same number of batches (uneven iterable data makes DDP hang), and at most
  world_size * batch_size - 1 rows per epoch are left out. Inside a rank, each DataLoader worker
  takes a contiguous run of that rank's batches, so no two workers read the same rows and each
  reads only the row groups under its run. Nothing is loaded whole: memory is a row group or two,
  whatever the number of shards (row permutations are drawn per group, when the group is read).
  Batches are views into a shuffled row group: the only copy on the way is a batch that straddles
  two row groups. Row groups are read in the loop that trains, not on a thread: on a machine with
  few cores (where the loader has no worker processes) a read-ahead thread costs more in GIL
  hand-overs and contention with torch's threads than it hides (measured with
  bench/train_throughput.py).

Order and resuming
  A DataLoader hands out its workers' batches round-robin, so the order training sees is the
  workers' runs interleaved (`batch_at`). A stream can resume an epoch after its first N batches
  in that order (`resume`): the remaining batches are dealt round-robin to the new loader's
  workers, which the loader interleaves back into exactly the same order. With the same number of
  workers each worker again reads (the rest of) one contiguous run.

Evaluation (`iter_batches`)
  Every row of every committed shard once, in manifest order, the last batch possibly short.

Both hand out dense `logits`, also from shards labeled with label.top_k (see schema.dense_logits),
and `input` also from shards that keep recipes instead (pipeline/shards/recipes.py): remade per
batch while streaming (in the loader's workers), once while reading a split into memory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.run import storage
from pipeline.errors import UserError
from pipeline.inputs.space import get_space
from pipeline.shards.manifest import Manifest, ShardRecord, require_intact
from pipeline.shards.recipes import InputRemaker
from pipeline.shards.schema import RECIPE_COLUMNS, dense_logits, field_dtype

def default_columns(manifest: Manifest) -> tuple[str, str]:
    """The input and the task's target column."""
    return ("input", manifest.target_column)

TOPK_COLUMNS = ("topk_values", "topk_indices")  # what a top-k shard stores instead of `logits`
OPEN_FILES = 32  # Parquet files a reader keeps open (row groups come in random shard order); bounds memory


def open_shard(split_dir: str, record: ShardRecord) -> pq.ParquetFile:
    """Open a committed shard, refusing one whose bytes differ from the manifest's record."""
    path = storage.join(split_dir, record.path)
    fs, p = storage.resolve(path)
    require_intact(split_dir, record)
    try:
        return pq.ParquetFile(fs.open_input_file(p))
    except Exception as exc:  # pyarrow: ArrowInvalid "Parquet magic bytes not found" and the like
        raise UserError(f"Shard {path} cannot be read as Parquet ({exc}).") from exc


def _column_numpy(column: pa.ChunkedArray | pa.Array, field: pa.Field) -> np.ndarray:
    """A column as numpy without a copy: [rows, width] of the field's dtype for an array column
    (fixed-size binary, see schema.py), [rows] for a scalar one. The result may be read-only."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dtype = field_dtype(field)
    if dtype is None:
        return array.to_numpy(zero_copy_only=False)
    width = array.type.byte_width // dtype.itemsize
    return np.frombuffer(array.buffers()[1], dtype, len(array) * width, array.offset * array.type.byte_width
                         ).reshape(-1, width)


def _table_numpy(table: pa.Table | pa.RecordBatch, names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: _column_numpy(table.column(name), table.schema.field(name)) for name in names}


def stored_columns(manifest: Manifest, columns: Sequence[str]) -> list[str]:
    """The Parquet columns that hold `columns`: a top-k shard keeps its logits in two."""
    if manifest.top_k is None:
        return list(columns)
    return [c for name in columns for c in (TOPK_COLUMNS if name == "logits" else (name,))]


def file_columns(shard: pq.ParquetFile, columns: Sequence[str]) -> list[str]:
    """The columns to read from one shard: a shard of recipes keeps `input` as its recipe and hash."""
    names = shard.schema_arrow.names
    if "input" in columns and "input" not in names and RECIPE_COLUMNS[0] in names:
        return [c for name in columns for c in (RECIPE_COLUMNS if name == "input" else (name,))]
    return list(columns)


def _remade(arrays: dict[str, np.ndarray], remaker: InputRemaker, source: str) -> dict[str, np.ndarray]:
    """Rows read from a shard of recipes with their `input` remade (and checked); others as they are."""
    if RECIPE_COLUMNS[0] not in arrays:
        return arrays
    out = {k: v for k, v in arrays.items() if k not in RECIPE_COLUMNS}
    out["input"] = remaker.inputs(arrays["recipe"], arrays["input_hash"], source)
    return out


def _densify(arrays: dict[str, np.ndarray], manifest: Manifest) -> dict[str, np.ndarray]:
    if TOPK_COLUMNS[0] not in arrays:
        return arrays
    out = {k: v for k, v in arrays.items() if k not in TOPK_COLUMNS}
    out["logits"] = dense_logits(arrays["topk_values"], arrays["topk_indices"], manifest.num_classes)
    return out


def columns_to_tensors(table, columns: Sequence[str], manifest: Manifest, remaker: InputRemaker | None = None,
                       source: str = "") -> dict[str, torch.Tensor]:
    """`columns` of an Arrow table or record batch as tensors (dense logits from a top-k shard's
    columns, inputs remade from a shard of recipes by `remaker`)."""
    arrays = _table_numpy(table, table.column_names)
    if remaker is not None:
        arrays = _remade(arrays, remaker, source)
    arrays = _densify(arrays, manifest)
    # Arrow's buffers are read-only; torch wants writable memory, so take a (cheap) copy.
    return {name: torch.from_numpy(np.array(arrays[name], copy=True)) for name in columns}


class _Groups:
    """Every row group of a split as three integer arrays (12 bytes a group, not a Python object)."""

    def __init__(self, split_dir: str, manifest: Manifest):
        records = [r for r in manifest.records() if r.rows > 0]
        self.paths = [storage.join(split_dir, r.path) for r in records]
        size = manifest.row_group_size
        counts = [-(-r.rows // size) for r in records]
        self.file = np.repeat(np.arange(len(records), dtype=np.int32), counts)
        self.index = np.concatenate([np.arange(c, dtype=np.int32) for c in counts] or [np.zeros(0, np.int32)])
        self.rows = np.full(len(self.file), size, dtype=np.int32)
        self.rows[np.cumsum(counts, dtype=np.int64) - 1] = [r.rows - (c - 1) * size for r, c in zip(records, counts)]
        # Where each group's rows start in the split's rows concatenated in manifest order.
        self.offset = np.concatenate([[0], np.cumsum(self.rows, dtype=np.int64)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.file)


def _run_start(worker: int, q: int, r: int) -> int:
    return worker * q + min(worker, r)


class ShardStream(IterableDataset):
    """Shuffled batches of shard rows for one DDP rank; see the module docstring for the plan."""

    def __init__(self, split_dir: str, manifest: Manifest, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, columns: Sequence[str] | None = None):
        self.split_dir, self.manifest = split_dir, manifest
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.columns = tuple(columns or default_columns(manifest))
        self.groups = _Groups(split_dir, manifest)
        self.records = {storage.join(split_dir, r.path): r for r in manifest.records()}
        self.set_epoch(0)
        if len(self) == 0:
            raise UserError(f"{split_dir} holds {manifest.rows} rows, fewer than one batch of {batch_size} for each "
                            f"of {world_size} rank(s): lower train.batch_size or generate more data.")

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch."""
        self.epoch = epoch
        self.resume_at = 0  # batches of the epoch already consumed, in the order below
        self.order_workers: int | None = None  # the loader workers whose interleaving fixes that order

    def resume(self, batches: int, order_workers: int) -> None:
        """Continue the current epoch after its first `batches` batches, in the order a loader with
        `order_workers` workers delivers them (whatever the number of workers from now on)."""
        if not 0 <= batches <= len(self) or order_workers < 1:
            raise ValueError(f"cannot resume after {batches} of {len(self)} batches with {order_workers} workers")
        self.resume_at, self.order_workers = batches, order_workers

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank)."""
        return (self.manifest.rows // self.world_size) // self.batch_size

    def _epoch_group_ids(self) -> np.ndarray:
        """The epoch's row groups in their shuffled order."""
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.groups))

    def _group_permutation(self, gid: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch, gid]).permutation(int(self.groups.rows[gid]))

    def epoch_order(self) -> np.ndarray:
        """The epoch's virtual sequence as indices into the split's rows in manifest order: the
        order a streaming reader visits them in, materialised (8 bytes a row)."""
        ids = self._epoch_group_ids()
        parts = [self.groups.offset[g] + self._group_permutation(int(g)) for g in ids]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def batch_at(self, position: int, order_workers: int) -> int:
        """The batch (index k: rows [k*B, (k+1)*B) of the rank's slice) delivered at `position` of the
        epoch by a loader with `order_workers` workers, each reading one contiguous run of batches,
        the longer runs first, taken round-robin."""
        q, r = divmod(len(self), order_workers)
        full_rounds = q * order_workers
        round_, worker = divmod(position, order_workers) if position < full_rounds else (q, position - full_rounds)
        return _run_start(worker, q, r) + round_

    def worker_batches(self, worker: int, num_workers: int) -> Iterator[int]:
        """The batches, in delivery order, that loader worker `worker` of `num_workers` yields: the rest
        of the epoch's order from `resume_at`, dealt round-robin."""
        num_workers = max(1, num_workers)
        order_workers = self.order_workers or num_workers
        return (self.batch_at(j, order_workers) for j in range(self.resume_at + worker, len(self), num_workers))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        ids = self._epoch_group_ids()
        ends = np.cumsum(self.groups.rows[ids], dtype=np.int64)  # of each group in the virtual sequence
        starts = ends - self.groups.rows[ids]
        rank_start = self.rank * len(self) * self.batch_size
        columns = stored_columns(self.manifest, self.columns)
        files: OrderedDict[str, pq.ParquetFile] = OrderedDict()
        remaker = InputRemaker(self.split_dir, self.manifest)

        def load(position: int) -> tuple[dict[str, np.ndarray], str]:
            """Row group `position` of the epoch, its rows shuffled (the permutation drawn per group,
            when it is read, so the plan costs memory per group, not per row)."""
            gid = int(ids[position])
            path = self.groups.paths[self.groups.file[gid]]
            if path in files:
                files.move_to_end(path)
            else:
                files[path] = open_shard(self.split_dir, self.records[path])
                if len(files) > OPEN_FILES:
                    files.popitem(last=False)
            read = file_columns(files[path], columns)
            table = files[path].read_row_group(int(self.groups.index[gid]), columns=read, use_threads=False)
            perm = self._group_permutation(gid)
            # One gather per row group into fresh (writable) memory; batches are then views into it.
            return {name: np.take(array, perm, axis=0) for name, array in _table_numpy(table, read).items()}, path

        loaded: dict[int, tuple[dict[str, np.ndarray], str]] = {}  # the row groups under the current batch
        for k in self.worker_batches(worker, num_workers):
            lo = rank_start + k * self.batch_size
            hi = lo + self.batch_size
            positions = range(int(np.searchsorted(ends, lo, side="right")),
                              int(np.searchsorted(ends, hi - 1, side="right")) + 1)
            loaded = {p: loaded[p] if p in loaded else load(p) for p in positions}
            pieces = []
            for p in positions:
                begin = int(starts[p])
                a, b = max(lo, begin) - begin, min(hi, int(ends[p])) - begin
                arrays, path = loaded[p]
                # Inputs kept as recipes are remade here: in the loader's worker processes, where it has them.
                pieces.append(_remade({name: array[a:b] for name, array in arrays.items()}, remaker, path))
            # A batch across row groups is the only copy on the way.
            batch = pieces[0] if len(pieces) == 1 else {
                name: np.concatenate([piece[name] for piece in pieces]) for name in columns}
            yield {name: torch.from_numpy(array) for name, array in _densify(batch, self.manifest).items()}


class MemoryStream(ShardStream):
    """A ShardStream over a split read once into tensors: the same batches in the same order as
    streaming (so a run may switch between the two, mid-epoch included), each gathered by index.

    For a split that fits in memory: no Parquet decoding, no copies beyond the batch itself, and
    the tensors may live on the GPU (`to`), so a batch never crosses the bus."""

    def __init__(self, split_dir: str, manifest: Manifest, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, columns: Sequence[str] | None = None,
                 data: dict[str, torch.Tensor] | None = None):
        super().__init__(split_dir, manifest, batch_size, seed, rank, world_size, columns)
        self.data = data if data is not None else read_split(split_dir, manifest, self.columns)

    def to(self, device: torch.device | str) -> "MemoryStream":
        self.data = {name: tensor.to(device) for name, tensor in self.data.items()}
        return self

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        device = next(iter(self.data.values())).device
        order = torch.from_numpy(self.epoch_order()).to(device)
        rank_start = self.rank * len(self) * self.batch_size
        for k in self.worker_batches(worker, num_workers):
            rows = order[rank_start + k * self.batch_size:rank_start + (k + 1) * self.batch_size]
            yield {name: tensor.index_select(0, rows) for name, tensor in self.data.items()}


def split_bytes(manifest: Manifest, columns: Sequence[str]) -> int:
    """Bytes `columns` of every row of a split take in memory as read_split holds them (not as the
    shards store them): a top-k split's logits are densified to float32 [rows, K] on reading, so
    a many-class top-k split takes far more memory than its shards' k values and indices."""
    per_row = 0
    for name in columns:
        if name == "input":
            per_row += int(np.prod(manifest.input_shape)) * get_space(manifest.input_space).stored_item_bytes
        elif name == "logits":
            # float16 as stored; float32 from schema.dense_logits for a top-k split.
            per_row += (2 if manifest.top_k is None else 4) * manifest.num_classes
        elif name == "targets":
            per_row += 4 * manifest.num_classes
        else:
            per_row += 8
    return per_row * manifest.rows


def read_split(split_dir: str, manifest: Manifest, columns: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """`columns` of every committed row, in manifest order, as one tensor each (dense logits from
    top-k shards). Every shard is checked against its sha256 as it is read."""
    columns = tuple(columns or default_columns(manifest))
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in columns}
    for batch in iter_batches(split_dir, manifest, 1 << 16, columns):
        for name in columns:
            parts[name].append(batch[name])
    return {name: torch.cat(tensors) if tensors else torch.zeros(0) for name, tensors in parts.items()}


def iter_batches(split_dir: str, manifest: Manifest, batch_size: int,
                 columns: Sequence[str] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Every committed row exactly once, in manifest order."""
    columns = columns or default_columns(manifest)
    remaker = InputRemaker(split_dir, manifest)
    for record in manifest.records():
        shard = open_shard(split_dir, record)
        source = storage.join(split_dir, record.path)
        for batch in shard.iter_batches(batch_size=batch_size, columns=file_columns(shard, stored_columns(manifest, columns))):
            yield columns_to_tensors(batch, columns, manifest, remaker, source)
