"""Every registered architecture is tested for free: parametrized over the registries."""

import pytest
import torch
import torch.nn as nn

from pipeline.kinds import check_kinds
from pipeline.config import Config, StudentConfig, TeacherConfig
from students import STUDENTS
from teachers import TEACHERS, count_parameters
from teachers.registry import Registry


@pytest.mark.parametrize("name", TEACHERS.names())
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_teacher_builds_and_maps_images_to_logits(name, shape):
    model = TEACHERS.build(name, input_shape=shape, num_outputs=7, width=8).eval()
    with torch.no_grad():
        out = model(torch.rand(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


FIELD_STUDENTS = ("fno", "unet")  # fields in, fields out: their outputs are whole fields on the grid


def outputs_for(name: str) -> int:
    return 64 if name in FIELD_STUDENTS else 10  # one 8 x 8 field, or ten classes


@pytest.mark.parametrize("name", STUDENTS.names())
def test_student_builds_trains_and_has_no_dropout(name):
    model = STUDENTS.build(name, input_shape=(1, 8, 8), num_outputs=outputs_for(name), width=16, depth=2)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.rand(4, 1, 8, 8)
    loss = model(x).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", STUDENTS.names())
def test_student_size_grows_with_width(name):
    small = STUDENTS.build(name, input_shape=(1, 8, 8), num_outputs=outputs_for(name), width=8, depth=2)
    large = STUDENTS.build(name, input_shape=(1, 8, 8), num_outputs=outputs_for(name), width=32, depth=2)
    assert count_parameters(large) > count_parameters(small)


def test_default_student_is_ten_times_smaller_than_default_teacher():
    t = TeacherConfig()
    teacher = TEACHERS.build(t.arch, input_shape=(1, 8, 8), num_outputs=10, width=t.width)
    s = check_kinds(Config()).student  # the classification task's default student
    student = STUDENTS.build(s.arch, input_shape=(1, 8, 8), num_outputs=10, width=s.width, depth=s.depth)
    assert count_parameters(student) * 10 <= count_parameters(teacher)


def test_registry_refuses_duplicates_and_names_choices():
    registry = Registry("widget")
    registry.register("a")(lambda **kw: nn.Identity())
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(lambda **kw: nn.Identity())
    with pytest.raises(KeyError, match="expected one of: a"):
        registry.build("b")
