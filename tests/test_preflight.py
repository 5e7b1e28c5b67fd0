"""Preflight: a student that cannot memorise a few examples stops the run before it starts."""

import dataclasses
import os
import re
import shutil

import pytest
import torch

import students.losses
from pipeline.run import rundir
from pipeline import shards
from pipeline.train.preflight import PREFLIGHT_ROWS, PreflightError, run_preflight
from pipeline.train.stage import run_train_stage
from pipeline.train.trainer import build_module
from students import kl_loss


@pytest.fixture(scope="module")
def setup(labeled_run):
    """The tiny run's own module and first batch."""
    manifest = shards.require_manifest(rundir.RunPaths(labeled_run.out).split("train"))
    batch = next(iter(shards.ShardStream(rundir.RunPaths(labeled_run.out).split("train"), manifest, 64)))
    return labeled_run, manifest, batch


def module_of(cfg, manifest):
    return build_module(cfg, manifest, steps_per_epoch=12)


def test_a_sound_setup_passes_and_leaves_the_runs_weights_alone(setup):
    cfg, manifest, batch = setup
    module = module_of(cfg, manifest)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = run_preflight(module, batch, cfg.train.lr, cfg.train.preflight_steps)
    assert result.last_loss <= 0.05 * result.first_loss and result.steps < cfg.train.preflight_steps
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_frozen_weights_are_caught(setup):
    cfg, manifest, batch = setup
    module = module_of(cfg, manifest)
    module.student.requires_grad_(False)
    with pytest.raises(PreflightError, match="no trainable parameters"):
        run_preflight(module, batch, cfg.train.lr, cfg.train.preflight_steps)


def test_a_loss_detached_from_the_model_is_caught(setup, monkeypatch):
    cfg, manifest, batch = setup
    module = module_of(cfg, manifest)
    # The bug: the student's logits leave the graph before the loss sees them.
    module.objective.loss_fn = lambda student, teacher, t: kl_loss(student.detach(), teacher, t)
    with pytest.raises(PreflightError, match="detached"):
        run_preflight(module, batch, cfg.train.lr, cfg.train.preflight_steps)


def test_an_input_pipeline_that_loses_the_inputs_is_caught(setup):
    """Every input arrives blank (say, a wrong conversion): the loss cannot fall near zero."""
    cfg, manifest, batch = setup
    blank = {**batch, "input": torch.zeros_like(batch["input"])}
    with pytest.raises(PreflightError, match=f"memorise {PREFLIGHT_ROWS} examples"):
        run_preflight(module_of(cfg, manifest), blank, cfg.train.lr, 200)


def test_the_train_stage_stops_before_writing_anything(labeled_run, tmp_path, monkeypatch):
    shutil.copytree(labeled_run.out, tmp_path / "run")
    cfg = dataclasses.replace(labeled_run, out=str(tmp_path / "run"))
    monkeypatch.setitem(students.losses.LOSSES, "kl", lambda s, t, temperature: kl_loss(s.detach(), t, temperature))
    with pytest.raises(PreflightError, match="--train.preflight false"):
        run_train_stage(cfg)
    paths = rundir.RunPaths(cfg.out)
    assert not os.path.exists(paths.student_dir), "nothing may be written before the preflight passes"


def test_a_learning_rate_too_high_is_named_with_the_one_that_works(setup):
    """At 0.1 the tiny run's MLP loses its inputs (dead units: the loss settles at that of the best
    output that ignores them); a tenth of it memorises. The error says which to use, and stops the
    first try early rather than after every step."""
    cfg, manifest, batch = setup
    with pytest.raises(PreflightError, match=r"at train.lr 0.1 the student does not learn .* set --train.lr 0.01 \(in a new --out") as err:
        run_preflight(module_of(cfg, manifest), batch, 0.1, 2000)
    assert int(re.search(r"after (\d+) steps", str(err.value)).group(1)) < 500
