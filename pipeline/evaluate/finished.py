"""Is a run directory finished with this config and teacher? Then `run` has nothing to do.

A scheduled job may start `run` again on a directory that a previous night finished. Every stage
would only reuse what is there, but labeling still reads every shard back to check it and eval
measures everything again. This check costs a few small reads instead: the recorded config is the
one given (a different one is refused as every stage refuses it), the teacher's card and weights
match its fingerprint, the seed data gives the generator hash the shards were made with, both
manifests are complete with every shard at its recorded size, the student was trained on this
teacher and exported (or its export failed and the train stage recorded that after writing these
weights: exporting again would only fail again), and the report is newer than the student. Anything
less and `run` does the missing work as usual. Every shard is also hashed (once a process): a
damaged one is refused with the command that repairs it, not reported as finished.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from pipeline import shards
from pipeline.config import Config
from pipeline.evaluate.report import Report, load_report
from pipeline.label.stage import generator_hash
from pipeline.run import rundir, storage
from pipeline.run.rundir import SPLITS
from pipeline.teach.load import read_card, read_content
from pipeline.inputs import get_space
from pipeline.train.export import export_failure_path, onnx_path
from pipeline.train.student import read_card as read_student_card


def _infos(paths: list[str]) -> list[pafs.FileInfo]:
    if not paths:
        return []
    fs, _ = storage.resolve(paths[0])
    return fs.get_file_info([storage.resolve(p)[1] for p in paths])


def _shards_in_place(cfg: Config, paths: rundir.RunPaths, fingerprint: str) -> bool:
    expected = generator_hash(cfg, get_space(cfg.data.space).seed_images(cfg))
    for split in SPLITS:
        manifest = shards.load_manifest(paths.split(split))
        if manifest is None or not manifest.complete or manifest.teacher_fingerprint != fingerprint \
                or manifest.generator_hash != expected:
            return False
        records = manifest.records()
        infos = _infos([storage.join(paths.split(split), r.path) for r in records])
        if any(info.type != pafs.FileType.File or info.size != r.bytes for info, r in zip(infos, records)):
            return False
        shards.check_split(paths.split(split), manifest)
    return True


def finished_report(cfg: Config) -> Report | None:
    """The report of the finished run in cfg.out, or None when some stage has work left there."""
    paths = rundir.RunPaths(cfg.out)
    if not storage.exists(paths.config):
        return None
    rundir.prepare(cfg)
    if not storage.exists(paths.teacher_card):
        return None
    teacher = read_card(paths)
    read_content(paths, teacher)  # a teacher changed since is refused, as the teacher stage refuses it
    card, weights, report, onnx, export_failed = _infos([
        paths.student_card, paths.student_weights, paths.report_json, onnx_path(paths.student_dir),
        export_failure_path(paths.student_dir)])
    if any(info.type != pafs.FileType.File for info in (card, weights, report)):
        return None
    # A failure recorded before these weights were written was an earlier student's.
    failed_here = export_failed.type == pafs.FileType.File and export_failed.mtime >= weights.mtime
    if onnx.type != pafs.FileType.File and not failed_here:
        return None
    if read_student_card(paths.student_dir).teacher_fingerprint != teacher.fingerprint:
        return None
    if report.mtime < weights.mtime:  # a report of an earlier student
        return None
    if not _shards_in_place(cfg, paths, teacher.fingerprint):
        return None
    return load_report(paths)
