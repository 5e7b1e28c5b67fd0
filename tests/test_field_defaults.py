"""The field space's student and training defaults: chosen from the fields, said, and yielding to the user's."""

from __future__ import annotations

from pipeline.config import (
    ChannelConfig, Config, DataConfig, FieldsConfig, StudentConfig, TaskConfig, TeacherConfig,
)
from pipeline.inputs.field_defaults import TARGET_STEPS
from pipeline.kinds import check_kinds


def fields_config(grid, periodic: bool, arch: str | None = None) -> Config:
    return check_kinds(Config(
        task=TaskConfig(kind="regression"), teacher=TeacherConfig(kind="callable", arch="my_solver:solve"),
        data=DataConfig(space="fields", shards=4, samples_per_shard=256,
                        fields=FieldsConfig(grid=list(grid), channels=[ChannelConfig(periodic=periodic)])),
        student=StudentConfig(arch=arch)))


def test_periodic_fields_get_a_neural_operator_and_bounded_ones_a_unet():
    periodic, bounded = fields_config([64], True), fields_config([16, 16], False)
    assert (periodic.student.arch, periodic.student.width, periodic.student.depth) == ("fno", 32, 4)
    assert (bounded.student.arch, bounded.student.width, bounded.student.depth) == ("unet", 8, 3)
    # 1,024 labels at batch 32: 32 steps an epoch, so the step budget sets the epochs.
    assert periodic.train.max_epochs == round(TARGET_STEPS[1] / 32)
    assert bounded.train.max_epochs == round(TARGET_STEPS[2] / 32) < periodic.train.max_epochs


def test_a_chosen_architecture_gets_its_own_sizes():
    cfg = fields_config([16, 16], False, arch="fno")
    assert (cfg.student.arch, cfg.student.width, cfg.student.depth) == ("fno", 32, 4)
