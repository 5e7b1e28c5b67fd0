"""Each kind of target and of input is decided in one place: its task module (pipeline/tasks/) or its
input space module (pipeline/inputs/). Everywhere else asks the task or space object, so no module
outside those packages compares anything with a kind's name; and the objects answer for both kinds."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
import torch

from pipeline.config import Config, DataConfig, LabelConfig, ParameterConfig, TaskConfig, TeacherConfig, TrainConfig
from pipeline.errors import ConfigError, UserError
from pipeline.inputs import SPACES, get_space
from pipeline.kinds import check_kinds
from pipeline.tasks import TASKS, get_task

ROOT = pathlib.Path(__file__).resolve().parents[1]
OWNERS = (ROOT / "pipeline" / "tasks", ROOT / "pipeline" / "inputs")
KIND_NAMES = set(TASKS) | set(SPACES)
# Constants that name one kind (the registered objects' module-level names).
KIND_CONSTANTS = {"CLASSIFICATION", "REGRESSION", "IMAGES", "VECTORS"}


def _names_a_kind(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value in KIND_NAMES:
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_kind(e) for e in node.elts)
    if isinstance(node, ast.Name) and node.id in KIND_CONSTANTS:
        return True
    if isinstance(node, ast.Attribute):
        # vectors.NAME, images.NAME, tasks.REGRESSION, ...
        if node.attr in KIND_CONSTANTS:
            return True
        return node.attr == "NAME" and isinstance(node.value, ast.Name) and node.value.id in ("images", "vectors")
    return False


def kind_tests(source: str, filename: str = "<source>") -> list[int]:
    """Lines where a comparison (==, !=, in, not in, is) involves a kind's name."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Compare) and any(_names_a_kind(x) for x in [node.left, *node.comparators]):
            lines.append(node.lineno)
    return lines


def test_no_module_outside_tasks_and_inputs_tests_a_kind_by_name():
    offenders = []
    for pkg in ("pipeline", "students", "teachers"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if any(owner in path.parents for owner in OWNERS):
                continue
            offenders += [f"{path.relative_to(ROOT)}:{line}" for line in kind_tests(path.read_text(), str(path))]
    assert not offenders, "kind tested by name outside pipeline/tasks and pipeline/inputs: " + ", ".join(offenders)


def test_the_check_catches_each_way_of_testing_a_kind():
    """The scan can fail: each form a branch on a kind takes is found."""
    for code in ('if task == "regression": pass', 'x = cfg.data.space != "vectors"',
                 'if kind in ("classification", "other"): pass', "if t == REGRESSION: pass",
                 "if s == vectors.NAME: pass", "if s is images.NAME: pass"):
        assert kind_tests(code) == [1], code
    assert kind_tests('kind = "regression"\nif kind == cfg.kind: pass') == []


def test_every_registered_task_and_space_is_an_object_with_its_name():
    assert {"classification", "regression"} <= set(TASKS)
    assert {"images", "vectors", "fields"} <= set(SPACES)
    for name in TASKS:
        assert get_task(name).name == name and get_task(name).column
    for name in SPACES:
        assert get_space(name).name == name
    with pytest.raises(UserError, match="task kind 'fields' is unknown"):
        get_task("fields")
    with pytest.raises(UserError, match="input space 'meshes' is unknown"):
        get_space("meshes")


def test_the_tasks_store_score_and_decide_each_in_their_own_terms():
    logits = np.array([[1e6, 0.0], [1.0, 2.0], [np.nan, 0.0]], np.float32)
    stored, finite = get_task("classification").stored_targets(logits)
    assert stored.dtype == np.float16 and finite.tolist() == [False, True, False]  # 1e6 overflows float16
    values, finite = get_task("regression").stored_targets(logits)
    assert values.dtype == np.float32 and finite.tolist() == [True, True, False]
    agree, err = get_task("classification").headline("p95"), get_task("regression").headline("p95")
    assert agree.better_or_equal(0.99, 0.98) and not err.better_or_equal(0.02, 0.01)
    rows = get_task("regression").row_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]]))
    assert rows["score"].tolist() == [0.5] and rows["teacher_class"].tolist() == [-1]


def test_options_that_do_not_fit_the_kind_are_refused_by_its_object():
    regression = TaskConfig(kind="regression")
    with pytest.raises(ConfigError, match="train.loss kl is not a loss of task.kind regression"):
        check_kinds(Config(task=regression, train=TrainConfig(loss="kl")))
    with pytest.raises(ConfigError, match="label.top_k is for classification"):
        check_kinds(Config(task=regression, label=LabelConfig(top_k=3)))
    with pytest.raises(ConfigError, match="data.space vectors needs data.parameters"):
        check_kinds(Config(data=DataConfig(space="vectors"), teacher=TeacherConfig(kind="callable", arch="sims:burgers")))
    with pytest.raises(ConfigError, match="task.kind must be one of"):
        check_kinds(Config(task=TaskConfig(kind="ranking")))
    box = [ParameterConfig("a", 0.0, 1.0)]
    with pytest.raises(ConfigError, match="no seed data to train a teacher on"):
        check_kinds(Config(data=DataConfig(space="vectors", parameters=box)))


@pytest.mark.parametrize("module", ["pipeline.inputs", "pipeline.shards", "pipeline.tasks"])
def test_each_package_imports_first_in_a_fresh_interpreter(module):
    """A package imported before any other must not meet one of its own half-initialised (a cycle
    through package __init__ files, which the layout test's module graph does not show)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
