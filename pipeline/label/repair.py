"""Damaged shards: found before the label stage starts, relabeled only when asked (`label --repair`).

A committed shard is renamed into place before the manifest records it, so a recorded shard that is
missing, or whose size or sha256 no longer match, was damaged after commit (a disk, a partial copy,
a hand edit). The label stage stops on one, naming it and this command, unless label.repair is set;
then it drops the damaged records and labels those shards again like any other. A shard's bytes are
a pure function of (config, seed, shard index, teacher), so the relabeled file is the one first
recorded, and what was trained and evaluated on it stays valid. Intact shards are not touched.
"""

from __future__ import annotations

from pipeline import shards
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.run import rundir
from pipeline.run.rundir import SPLITS


def damaged_splits(cfg: Config, paths: rundir.RunPaths, teacher_fingerprint: str,
                   gen_hash: str) -> dict[str, dict[int, str]]:
    """Split -> its recorded shards that are missing or altered (index -> what is wrong), for every
    split before any work, so that a refusal leaves everything as it was."""
    damaged = {}
    for split in SPLITS:
        split_dir = paths.split(split)
        manifest = shards.load_manifest(split_dir)
        if manifest is None:
            continue
        if manifest.teacher_fingerprint != teacher_fingerprint or manifest.generator_hash != gen_hash:
            what = "teacher" if manifest.teacher_fingerprint != teacher_fingerprint else "generator config"
            raise UserError(f"{split_dir} holds shards made with a different {what}; use another --out to label anew.")
        damaged[split] = shards.damaged_shards(split_dir, manifest)
        if damaged[split] and not cfg.label.repair:
            raise shards.damage_error(split_dir, damaged[split])
    return damaged


def repair_line(split: str, result) -> str:
    """What `label --repair` did to a split (a label.stage.SplitResult), in one line."""
    if result.dropped:
        names = ", ".join(result.dropped[:5]) + (" …" if len(result.dropped) > 5 else "")
        return (f"{split}: dropped {len(result.dropped)} damaged shard(s) of adaptive rounds ({names}) and "
                f"relabeled {len(result.repaired)} other(s): rerun `python -m pipeline run` on "
                f"{result.split_dir.rsplit('/shards/', 1)[0]} with its config, whose rounds label them again "
                "from their stored proposals")
    if not result.written:
        return f"{split}: nothing to repair: all {result.skipped} shard(s) in {result.split_dir} match the manifest"
    repaired = result.repaired
    names = ", ".join(repaired[:5]) + (" …" if len(repaired) > 5 else "")
    differ = len(repaired) - result.repaired_identical
    same = ("byte for byte as first recorded" if not differ else
            f"{differ} of them with other bytes than first recorded (the teacher's outputs differ on this machine)")
    fresh = result.written - len(repaired)
    return (f"{split}: relabeled {len(repaired)} damaged shard(s) ({names}), {same}"
            + (f"; labeled {fresh} shard(s) never labeled before" if fresh else "")
            + f"; {result.skipped} intact shard(s) untouched in {result.split_dir}")
