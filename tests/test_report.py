"""The report rendered from a tiny trained run: report.json (the contract and its extensions),
report.md, a self-contained report.html whose every embedded image decodes, the PNG figures, and
the gallery of the worst held-out rows."""

import base64
import dataclasses
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import shards
from pipeline.evaluate.render import markdown, write_report
from pipeline.evaluate.report import Report, terminal_summary
from pipeline.evaluate.stage import run_eval_stage
from pipeline.tasks.worst import GALLERY_SIZE, decode_input
from pipeline.inputs.images import decode_numpy
from pipeline.run.rundir import RunPaths
from pipeline.teach.load import load_teacher
from pipeline.inputs.seeds import load_seed
from teachers import accuracy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluated(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(trained_run.out, out)
    cfg = dataclasses.replace(trained_run, out=str(out))
    cfg.eval = dataclasses.replace(cfg.eval, latency_seconds=0.02, min_agreement=0.0)
    report = run_eval_stage(cfg)
    return cfg, report, json.loads((out / "report.json").read_text())


def test_report_json_keeps_the_contract(evaluated):
    _, _, data = evaluated
    for split in ("train", "heldout"):
        m = data["agreement"][split]
        assert all(isinstance(m[k], float) for k in ("top1", "top5", "kl"))
        assert 0 <= m["top1"] <= m["top5"] <= 1 and m["kl"] >= 0
    assert 0 <= data["accuracy"]["teacher"] <= 1 and 0 <= data["accuracy"]["student"] <= 1
    assert isinstance(data["params"]["teacher"], int) and isinstance(data["params"]["student"], int)
    assert data["gate"] == {"min_agreement": 0.0, "passed": True}  # the task's bar only (no regression keys)


def test_every_split_is_counted_exactly(evaluated):
    cfg, _, data = evaluated
    for split in ("train", "heldout"):
        manifest = shards.require_manifest(RunPaths(cfg.out).split(split))
        assert data["agreement"][split]["samples"] == manifest.rows
        assert sum(map(sum, data["confusion"][split])) == manifest.rows
    assert data["agreement"]["test"]["samples"] == data["accuracy"]["test_samples"] == len(load_seed(cfg).test_labels)


def test_the_extended_sections_agree_with_each_other(evaluated):
    cfg, _, data = evaluated
    k = len(data["classes"])
    for split in ("train", "heldout", "test"):
        matrix = data["confusion"][split]
        assert len(matrix) == k and all(len(row) == k for row in matrix)
        assert data["agreement"][split]["top1"] == pytest.approx(sum(matrix[i][i] for i in range(k)) / sum(map(sum, matrix)))
        assert len(data["per_class_agreement"][split]) == k
        assert 0 <= data["agreement"][split]["js"] <= 0.6932
        assert 0 <= data["calibration"][split]["student_vs_teacher"] <= 1
    assert set(data["calibration"]["test"]) == {"student_vs_teacher", "teacher", "student"}
    assert "teacher" not in data["calibration"]["heldout"]  # no true labels on generated inputs
    assert sum(data["reliability"]["test"]["teacher"]["count"]) == data["accuracy"]["test_samples"]
    teacher, _ = load_teacher(RunPaths(cfg.out))
    seed = load_seed(cfg)
    test_inputs = decode_numpy(seed.test_images, seed.input_shape)
    assert data["accuracy"]["teacher"] == pytest.approx(accuracy(teacher, test_inputs, seed.test_labels))


def test_latency_and_curves_are_in_the_report(evaluated):
    cfg, _, data = evaluated
    lat = data["latency"]
    for who in ("teacher", "student"):
        assert lat[who]["batch1_ms"] > 0 and lat[who]["batch256_ms"] > 0
    assert lat["speedup"]["batch1"] == pytest.approx(lat["teacher"]["batch1_ms"] / lat["student"]["batch1_ms"])
    assert data["curves"]["epoch"] == list(range(cfg.train.max_epochs))
    assert len(data["curves"]["train/agreement"]) == cfg.train.max_epochs


def test_markdown_html_and_figures_are_written(evaluated):
    cfg, report, _ = evaluated
    root = RunPaths(cfg.out).root
    figures = {name: Path(f"{root}/plots/{name}.png").read_bytes()
               for name in ("curves", "per_class", "reliability", "confusion")}
    thumbnails = [p.read_bytes() for p in sorted((Path(root) / "plots" / "worst").iterdir())]
    assert len(thumbnails) == len(report.gallery["rows"])
    assert all(png.startswith(PNG_MAGIC) for png in figures.values())
    md = Path(f"{root}/report.md").read_text()
    assert "top-1 agreement" in md and "promotion gate" in md
    assert all(f"(plots/{name}.png)" in md for name in figures)
    assert "## Worst held-out disagreements" in md and "(plots/worst/01.png)" in md
    html = Path(f"{root}/report.html").read_text()
    embedded = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]
    # Each figure and thumbnail embedded: exactly the PNGs on disk.
    assert sorted(embedded) == sorted([*figures.values(), *thumbnails])
    assert "src=\"plots/" not in html and "<link" not in html  # self-contained: nothing fetched beside it
    assert "Promotion gate PASSED" in html
    assert f"{report.agreement['heldout']['top1']:.4f}" in html
    summary = terminal_summary(report)
    assert all(split in summary for split in ("train", "heldout", "test"))
    assert "CPU latency" in summary and "x faster" in summary


def test_the_report_round_trips_through_json(evaluated):
    _, report, data = evaluated
    again = Report.from_dict(data)
    assert again.to_dict() == data
    assert markdown(again) == markdown(report)  # the saved report renders as the fresh one (sweep re-renders it)


def test_a_report_without_latency_curves_or_sweep_still_renders(evaluated, tmp_path):
    data = evaluated[2]
    bare = Report.from_dict({**data, "latency": None, "curves": {}, "sweep": None, "gate": {"min_agreement": 1.0}})
    paths = RunPaths(str(tmp_path))
    write_report(paths, bare)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion.png", "per_class.png", "reliability.png", "worst"]
    html = (tmp_path / "report.html").read_text()
    assert "Promotion gate FAILED" in html and "CPU latency" not in html


class _Images(HTMLParser):
    """Every <img> of a page: its src, and the class of the element it sits in."""

    def __init__(self):
        super().__init__()
        self.images, self.classes = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.classes.append(attrs.get("class") or "")
        if tag == "img":
            self.images.append(attrs.get("src") or "")


def test_every_embedded_image_decodes(evaluated):
    cfg, report, _ = evaluated
    page = _Images()
    page.feed((Path(cfg.out) / "report.html").read_text())
    assert len(page.images) == 4 + len(report.gallery["rows"])  # curves, per class, reliability, confusion
    for src in page.images:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64", head[:40]  # nothing fetched from beside the page
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.verify()  # the whole stream, checksums included
        assert image.format == "PNG" and 48 <= min(image.size) and max(image.size) <= 3000, image.size
    assert page.classes.count("gallery") == 1
    assert page.classes.count("card disagrees") == sum(not r["agrees"] for r in report.gallery["rows"])


def test_the_gallery_holds_the_worst_heldout_rows(evaluated):
    cfg, _, data = evaluated
    rows = data["gallery"]["rows"]
    split_dir = RunPaths(cfg.out).split("heldout")
    manifest = shards.require_manifest(split_dir)
    assert len(rows) == min(GALLERY_SIZE, manifest.rows) and data["gallery"]["input_space"] == "images"
    keys = [(r["agrees"], -r["kl"], r["shard"], r["row"]) for r in rows]
    assert keys == sorted(keys)  # disagreements first, then the largest KL
    disagreeing = manifest.rows - sum(data["confusion"]["heldout"][i][i] for i in range(len(data["classes"])))
    assert sum(not r["agrees"] for r in rows) == min(len(rows), disagreeing)
    for r in rows[:3]:  # each kept input is the stored row its shard file and row name
        record = manifest.shards[r["shard"]]
        assert record.path == r["file"]
        one = dataclasses.replace(manifest, shards={r["shard"]: record})
        stored = next(shards.iter_batches(split_dir, one, record.rows))["input"][r["row"]].numpy()
        assert np.array_equal(decode_input(r["input"]).reshape(-1), stored)
        assert list(decode_input(r["input"]).shape) == manifest.input_shape
        assert r["agrees"] == (r["teacher"][0][0] == r["student"][0][0])
        assert all(0 <= p <= 1 for _, p in r["teacher"] + r["student"])
    assert len(json.dumps(data["gallery"])) < 64 * 1024  # report.json stays small
