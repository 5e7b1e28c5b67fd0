"""The manifest: the one list of committed shards that every reader trusts.

A shard exists for readers only once the manifest records it (path, rows, sha256, ...). Readers
never list directories. The manifest is rewritten atomically (temporary name, then rename), and
only by the driver of the labeling stage, so there is a single writer.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Optional

import pyarrow.fs as pafs

from pipeline.run import storage
from pipeline.errors import UserError
from pipeline.fields import type_problem
from pipeline.shards.schema import SCHEMA_VERSION
from pipeline.tasks import get_task

MANIFEST_NAME = "manifest.json"


@dataclass
class ShardRecord:
    index: int
    path: str  # file name, relative to the manifest's directory
    rows: int
    sha256: str
    bytes: int
    seed: int
    rejected: int = 0  # rows dropped: the teacher's outputs were not finite, or its batch failed
    first_error: str = ""  # the first failure of the teacher on this shard (raised, timed out), if any
    teacher_seconds: float = 0.0  # time spent inside the teacher's calls (its throughput, for the report)
    node: str = ""  # Ray node that labeled the shard (for the record; not part of the content)
    round: int = 0  # active distillation: the round that labeled it (0: uniform; pipeline/adapt/)
    provenance: Optional[dict] = None  # a later round's shard: the proposal it labels (round, file, kinds, sources)


@dataclass
class Manifest:
    split: str
    teacher_fingerprint: str
    generator_hash: str
    input_shape: list[int]
    num_classes: int
    planned_shards: int
    row_group_size: int
    top_k: Optional[int] = None  # shards store only the k largest logits per row (see schema.py)
    input_space: str = "images"  # how stored inputs decode to model inputs (pipeline.inputs.space)
    task: str = "classification"  # what the targets are (pipeline.tasks.task)
    parameters: Optional[list] = None  # vectors: the box, [{name, low, high, log}] (pipeline.inputs.vectors)
    target_shape: Optional[list] = None  # fields: one target's shape [C', *grid] (stored flat); None: [K]
    label_seconds: float = 0.0  # wall clock the label stage spent writing this split's shards (all runs)
    # Shards of recipes (data.store_inputs): the seed images they remake inputs from, a file in this
    # directory {"file", "sha256", "bytes"}, and the versions of the libraries that made the inputs.
    recipe: Optional[dict] = None
    schema_version: int = SCHEMA_VERSION
    shards: dict[int, ShardRecord] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards.values())

    @property
    def target_column(self) -> str:
        return get_task(self.task).column

    @property
    def complete(self) -> bool:
        return len(self.shards) == self.planned_shards

    def records(self) -> list[ShardRecord]:
        return [self.shards[i] for i in sorted(self.shards)]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["shards"] = [asdict(s) for s in self.records()]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        """Raises ValueError or TypeError, saying which field is wrong, for anything but a manifest."""
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        data = dict(data)
        records = data.pop("shards", [])
        problem = type_problem(cls, data, skip=("shards",)) or (None if isinstance(records, list) else
                                                                 "shards is not a list")
        for record in records if not problem else []:
            problem = (type_problem(ShardRecord, record) if isinstance(record, dict) else "a shard is not an object")
            if not problem and not _plain_name(record.get("path")):
                problem = f"shard path {record.get('path')!r} is not a file name"
            if problem:
                break
        if problem:
            raise ValueError(problem)
        shards = {s["index"]: ShardRecord(**s) for s in records}
        return cls(**data, shards=shards)


def _plain_name(path) -> bool:
    """A shard's path is a file name in the manifest's own directory, never a way out of it."""
    return isinstance(path, str) and path not in ("", ".", "..") and "/" not in path and "\\" not in path


def manifest_path(split_dir: str) -> str:
    return storage.join(split_dir, MANIFEST_NAME)


def load_manifest(split_dir: str) -> Manifest | None:
    """The manifest in `split_dir`, or None if no shard was ever committed there."""
    path = manifest_path(split_dir)
    if not storage.exists(path):
        return None
    data = storage.read_json(path)
    try:
        manifest = Manifest.from_dict(data)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise UserError(f"{path} is not a shard manifest this version understands ({exc}).") from exc
    if manifest.schema_version != SCHEMA_VERSION:
        raise UserError(f"{path} has shard schema version {manifest.schema_version}; this version reads "
                        f"{SCHEMA_VERSION}: label the data again into a new output directory.")
    return manifest


def require_manifest(split_dir: str) -> Manifest:
    """The manifest of a complete split whose every shard has the bytes it records: what a stage that
    reads the split (train, eval, sweep, promote) starts from, so it refuses damage before it
    writes anything, and its readers then find each shard already hashed (see check_shard)."""
    manifest = load_manifest(split_dir)
    if manifest is None:
        raise UserError(f"No labeled shards in {split_dir}: run the label stage first.")
    if not manifest.complete:
        raise UserError(
            f"{split_dir} holds {len(manifest.shards)} of {manifest.planned_shards} shards: "
            "rerun the label stage to finish it."
        )
    check_split(split_dir, manifest)
    return manifest


def save_manifest(split_dir: str, manifest: Manifest) -> None:
    storage.write_json_atomic(manifest_path(split_dir), manifest.to_dict())


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


HASH_CHUNK = 8 << 20  # bytes read at a time while hashing a shard
_hashed: set[tuple] = set()  # (filesystem, path, size, mtime, sha256) of shards this process found intact


def check_shard(split_dir: str, record: ShardRecord, trust_seen: bool = True) -> str | None:
    """None if the shard on disk has the size and sha256 its record says, else a sentence saying what
    is wrong (naming the file).

    Every byte is hashed the first time a process checks a shard; with `trust_seen`, later checks of
    the same unchanged file (same size and modification time) are trusted, so an epoch loop, or a
    stage that checked its splits up front, hashes each shard once, not on every open."""
    path = storage.join(split_dir, record.path)
    fs, p = storage.resolve(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        return f"{path} is missing"
    if info.type != pafs.FileType.File:
        return f"{path} is a {info.type.name.lower()}, not a file"
    if info.size != record.bytes:
        return f"{path} has {info.size} bytes where the manifest records {record.bytes} (truncated or altered)"
    key = (fs.type_name, p, info.size, info.mtime_ns, record.sha256)
    if trust_seen and key in _hashed:
        return None
    digest = hashlib.sha256()
    with fs.open_input_stream(p) as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != record.sha256:
        return f"{path} does not match its sha256 in the manifest (altered after commit)"
    _hashed.add(key)
    return None


def repair_command(split_dir: str) -> str:
    """The command that relabels a split's damaged shards: the run directory is two levels up
    (DIR/shards/<split>)."""
    parts = split_dir.rstrip("/").rsplit("/", 2)
    out = parts[0] if len(parts) == 3 and parts[1] == "shards" else "DIR"
    return f"python -m pipeline label --repair --out {out}"


def damaged_shards(split_dir: str, manifest: Manifest) -> dict[int, str]:
    """Index -> what is wrong, for every recorded shard that is missing or differs from its record."""
    return {r.index: problem for r in manifest.records() if (problem := check_shard(split_dir, r))}


def damage_error(split_dir: str, damaged: dict[int, str]) -> UserError:
    """One sentence for damaged shards of a split: the first, how many more, and the command that repairs them."""
    first = damaged[min(damaged)]
    more = f", and {len(damaged) - 1} more shard(s) of {split_dir} are damaged" if len(damaged) > 1 else ""
    them = "them" if len(damaged) > 1 else "it"
    return UserError(f"Shard {first}{more}: relabel {them} with `{repair_command(split_dir)}`.")


def check_seed_file(split_dir: str, manifest: Manifest) -> str | None:
    """None if the split keeps no recipes or its seed-image file has the bytes recorded, else what
    is wrong (naming the file)."""
    if not manifest.recipe:
        return None
    seeds = manifest.recipe
    record = ShardRecord(index=-1, path=seeds["file"], rows=0, sha256=seeds["sha256"], bytes=seeds["bytes"], seed=0)
    problem = check_shard(split_dir, record)
    return None if problem is None else f"{problem}: it holds the seed images the split's recipes remake inputs from"


def check_split(split_dir: str, manifest: Manifest) -> None:
    """Raise a UserError naming the first damaged shard of the split (or its seed images) and the
    command that repairs it."""
    damaged = damaged_shards(split_dir, manifest)
    if damaged:
        raise damage_error(split_dir, damaged)
    problem = check_seed_file(split_dir, manifest)
    if problem:
        raise UserError(f"{problem}; write it again with `{repair_command(split_dir)}`.")


def require_intact(split_dir: str, record: ShardRecord) -> None:
    """Raise a UserError unless the shard has the size and sha256 its record says (each unchanged
    file is hashed once per process: see check_shard)."""
    problem = check_shard(split_dir, record)
    if problem:
        raise damage_error(split_dir, {record.index: problem})
