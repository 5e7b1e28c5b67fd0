"""`python -m pipeline verify DIR`: check every shard the manifests record against its checksum.

Lists each missing, truncated or altered shard, and each planned shard not yet labeled. Reads
every byte of every shard, whatever this process checked before; stages check the splits they
read the same way (once per process), and refuse damage with the command that repairs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import shards
from pipeline.run.rundir import SPLITS, RunPaths



@dataclass
class VerifyResult:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_run(out: str) -> VerifyResult:
    paths = RunPaths(out)
    result = VerifyResult()
    for split in SPLITS:
        split_dir = paths.split(split)
        manifest = shards.load_manifest(split_dir)
        if manifest is None:
            result.problems.append(f"{split_dir}: no manifest (the split was never labeled)")
            continue
        for record in manifest.records():
            result.checked += 1
            problem = shards.check_shard(split_dir, record, trust_seen=False)
            if problem:
                result.problems.append(problem)
        missing = sorted(set(range(manifest.planned_shards)) - set(manifest.shards))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
            result.problems.append(f"{split_dir}: {len(missing)} planned shard(s) not labeled yet (index {shown})")
    return result
