"""A shard damaged after commit never trains or scores a student, and one command repairs it.

The scenario a user would try: one byte in the middle of a committed training shard is changed on
disk, its size kept. Every command that would read the shards (train, eval, sweep, label, run)
exits 1 with one line naming the file and `label --repair`, and writes nothing. `label --repair`
relabels only the damaged or missing shards (their bytes are a pure function of config, seed, index
and teacher, so they come back as first recorded) and leaves intact ones untouched; training then
works. (A finished student is reused by `train` without reading any shard, so the train case runs
on a run that has no student yet.)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from pipeline import shards
from pipeline.run.rundir import RunPaths
from tests.conftest import cli

pytestmark = pytest.mark.usefixtures("ray_local")  # the in-process label and train stages reuse it


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time (the lock file aside)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


def copy(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def shard(run: Path, split: str, index: int) -> Path:
    return run / "shards" / split / shards.shard_file_name(split, index)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def damaged(finished_run, labeled_run, tmp_path_factory) -> dict[str, Path]:
    """A finished run and a labeled one (no student), each with one byte of training shard 1 changed."""
    base = tmp_path_factory.mktemp("corrupt")
    runs = {"finished": copy(finished_run.out, base / "finished"), "labeled": copy(labeled_run.out, base / "labeled")}
    for run in runs.values():
        flip_middle_byte(shard(run, "train", 1))
    return runs


COMMANDS = {
    "train": lambda run: ["train", "--out", str(run)],
    "eval": lambda run: ["eval", str(run), "--eval.latency", "false"],
    "sweep": lambda run: ["sweep", str(run), "--sweep.widths", "[4]"],
    "label": lambda run: ["label", "--out", str(run)],
    "run": lambda run: ["run", "--config", str(run / "config.yaml"), "--out", str(run), "--eval.latency", "false"],
}
THROUGH_A_PROCESS = ("train", "run")  # as a user runs them; the others through the entry point, in this process


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_changed_byte_stops_every_command(damaged, command, capsys):
    from pipeline.__main__ import main

    run = damaged["labeled" if command == "train" else "finished"]
    before = files(run)
    if command in THROUGH_A_PROCESS:
        proc = cli(*COMMANDS[command](run))
        code, stderr = proc.returncode, proc.stderr
    else:
        code = main(COMMANDS[command](run))
        stderr = capsys.readouterr().err
    line = one_error_line(stderr)
    assert code == 1, line
    assert str(shard(run, "train", 1)) in line and f"python -m pipeline label --repair --out {run}" in line
    assert files(run) == before


def test_missing_and_truncated_shards_are_refused_too(finished_run, tmp_path, capsys):
    from pipeline.__main__ import main

    run = copy(finished_run.out, tmp_path / "run")
    shard(run, "heldout", 0).unlink()
    train1 = shard(run, "train", 1)
    train1.write_bytes(train1.read_bytes()[:-100])
    before = files(run)
    assert main(["eval", str(run), "--eval.latency", "false"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{train1} has" in line and "truncated" in line and "label --repair" in line
    train1.unlink()  # now both splits are missing a shard: the first is named, the fix is the same
    assert main(["sweep", str(run), "--sweep.widths", "[4]"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{train1} is missing" in line and "label --repair" in line
    assert files(run) == {k: v for k, v in before.items() if k != str(train1.relative_to(run))}


def test_label_repair_relabels_only_the_damaged_shards(finished_run, tmp_path, capsys):
    from pipeline.__main__ import main

    run = copy(finished_run.out, tmp_path / "run")
    paths = RunPaths(str(run))
    recorded = {s: shards.load_manifest(paths.split(s)) for s in ("train", "heldout")}
    flip_middle_byte(shard(run, "train", 1))
    shard(run, "train", 2).unlink()
    held = shard(run, "heldout", 0)
    held.write_bytes(held.read_bytes()[:1000])
    intact = shard(run, "train", 0)
    intact_stat = intact.stat()

    assert main(["label", "--out", str(run)]) == 1  # without --repair: refused, nothing relabeled
    assert "label --repair" in one_error_line(capsys.readouterr().err)
    assert not shard(run, "train", 2).exists()

    assert main(["label", "--repair", "--out", str(run)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("train: relabeled 2 damaged shard(s) (train-00001.parquet, train-00002.parquet), "
                             "byte for byte as first recorded; 1 intact shard(s) untouched"), out
    assert out[1].startswith("heldout: relabeled 1 damaged shard(s) (heldout-00000.parquet)"), out
    for split, before in recorded.items():
        after = shards.load_manifest(paths.split(split))
        assert [(r.path, r.sha256, r.bytes) for r in after.records()] == \
               [(r.path, r.sha256, r.bytes) for r in before.records()]
        assert shards.damaged_shards(paths.split(split), after) == {}
    assert (intact.stat().st_mtime_ns, intact.stat().st_ino) == (intact_stat.st_mtime_ns, intact_stat.st_ino)
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]

    assert main(["label", "--repair", "--out", str(run)]) == 0  # a second repair finds nothing to do
    assert capsys.readouterr().out.startswith("train: nothing to repair: all 3 shard(s)")

    shutil.rmtree(run / "student")  # so that train reads the repaired shards rather than reusing the student
    assert main(["train", "--out", str(run), "--train.preflight", "false"]) == 0
    assert os.path.exists(paths.student_weights)


def test_label_repair_leaves_shards_of_adaptive_rounds_to_the_rounds(finished_run, tmp_path, capsys):
    """A shard past the label stage's own plan was labeled by an adaptive round from its stored
    proposal: repair drops its damaged record (the rounds label it again) and says so."""
    from pipeline.__main__ import main

    run = copy(finished_run.out, tmp_path / "run")
    split_dir = RunPaths(str(run)).split("train")
    manifest = shards.load_manifest(split_dir)
    extra = dataclasses.replace(manifest.shards[0], index=3, path=shards.shard_file_name("train", 3))
    shutil.copy(shard(run, "train", 0), shard(run, "train", 3))
    manifest.shards[3], manifest.planned_shards = extra, 4
    shards.save_manifest(split_dir, manifest)
    flip_middle_byte(shard(run, "train", 3))

    assert main(["label", "--repair", "--out", str(run)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("train: dropped 1 damaged shard(s) of adaptive rounds (train-00003.parquet) and "
                           "relabeled 0 other(s)"), line
    assert sorted(shards.load_manifest(split_dir).shards) == [0, 1, 2]
