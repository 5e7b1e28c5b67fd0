"""`python -m pipeline verify DIR`: check every shard the manifests record against its checksum.

Lists each missing, truncated or altered shard (and seed-image file), each planned shard not yet
labeled, and each shard of recipes whose inputs this machine does not remake as the teacher saw
them. Reads every byte of every shard, whatever this process checked before; stages check the splits they
read the same way (once per process), and refuse damage with the command that repairs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import shards
from pipeline.errors import UserError
from pipeline.run import storage
from pipeline.run.rundir import SPLITS, RunPaths
from pipeline.shards import reader
from pipeline.shards.recipes import InputRemaker
from pipeline.shards.schema import RECIPE_COLUMNS



@dataclass
class VerifyResult:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _remake_problem(split_dir: str, manifest: shards.Manifest, record: shards.ShardRecord) -> str | None:
    """For a shard of recipes: None if every input it remakes here hashes as the teacher's did, else
    what differs (the inputs are rendered again: this is the check training would make)."""
    shard = shards.open_shard(split_dir, record)
    if RECIPE_COLUMNS[0] not in shard.schema_arrow.names:
        return None
    remaker = InputRemaker(split_dir, manifest)
    source = storage.join(split_dir, record.path)
    try:
        for batch in shard.iter_batches(batch_size=1024, columns=list(RECIPE_COLUMNS)):
            reader.columns_to_tensors(batch, (), manifest, remaker, source)  # remakes every input and checks it
    except UserError as exc:
        return str(exc)
    return None


def verify_run(out: str) -> VerifyResult:
    paths = RunPaths(out)
    result = VerifyResult()
    for split in SPLITS:
        split_dir = paths.split(split)
        manifest = shards.load_manifest(split_dir)
        if manifest is None:
            result.problems.append(f"{split_dir}: no manifest (the split was never labeled)")
            continue
        seeds_problem = shards.check_seed_file(split_dir, manifest)
        if seeds_problem:
            result.problems.append(seeds_problem)
        for record in manifest.records():
            result.checked += 1
            problem = shards.check_shard(split_dir, record, trust_seen=False)
            if problem is None and not seeds_problem:
                problem = _remake_problem(split_dir, manifest, record)
            if problem:
                result.problems.append(problem)
        missing = sorted(set(range(manifest.planned_shards)) - set(manifest.shards))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
            result.problems.append(f"{split_dir}: {len(missing)} planned shard(s) not labeled yet (index {shown})")
    return result
