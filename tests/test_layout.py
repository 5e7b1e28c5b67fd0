"""The dependency rule of the code layout, checked on the source (every import, also inside functions).

Nouns (config, errors, resolve, run, inputs, tasks, shards, teachers, students) never import verbs
(teach, label, train, evaluate, adapt, sweep, promote); a verb imports only itself and the verbs upstream of it; no
module is part of an import cycle; teachers/ and students/ know nothing of Ray, Parquet or the pipeline.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "teachers", "students")
VERBS = ("pipeline.teach", "pipeline.label", "pipeline.train", "pipeline.evaluate", "pipeline.adapt", "pipeline.sweep",
         "pipeline.promote")  # upstream first
TOP = ("pipeline.__main__",)


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(path: pathlib.Path, modules: dict) -> set[str]:
    """Project modules that `path` imports anywhere (`from a.b import c` counts a.b.c where that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    # Importing pipeline.a.b from outside package pipeline.a first runs pipeline/a/__init__.py: that
    # package's __init__ is imported too. (Inside its own package a module's package is already loading.)
    own = set(_packages_of(module_name(path), modules)) | {module_name(path)}
    return found | {pkg for name in found for pkg in _packages_of(name, modules) if pkg not in own}


def _packages_of(name: str, modules: dict) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in modules}


def external_imports_of(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def layer(module: str) -> int | None:
    """None for a noun, the verb's position for a verb, len(VERBS) for the entry point."""
    if module in TOP:
        return len(VERBS)
    for i, verb in enumerate(VERBS):
        if module == verb or module.startswith(verb + "."):
            return i
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def rule_violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in graph.items():
        here = layer(module)
        for target in targets:
            there = layer(target)
            if there is None:
                continue  # everyone may import a noun
            if here is None or there > here:
                wrong.append(f"{module} -> {target}")
    return sorted(wrong)


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: any component of two or more modules is a cycle."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_nouns_never_import_verbs_and_verbs_import_only_upstream(graph):
    assert not rule_violations(graph), "imports against the dependency rule: " + ", ".join(rule_violations(graph))


def test_no_import_cycles(graph):
    assert not cycles_of(graph), f"import cycles: {cycles_of(graph)}"


def test_teachers_and_students_know_nothing_of_ray_parquet_or_the_pipeline():
    offenders = []
    for pkg in ("teachers", "students"):
        for path in (ROOT / pkg).rglob("*.py"):
            bad = external_imports_of(path) & {"ray", "pyarrow", "pipeline", "lightning"} - (
                {"lightning"} if path.name == "module.py" else set())
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {', '.join(sorted(bad))}")
    assert not offenders, offenders


def test_the_checks_catch_a_wrong_way_import_and_a_cycle(graph):
    """The checks can fail: an injected noun -> verb import, an upstream -> downstream one and a cycle
    are each reported."""
    broken = {k: set(v) for k, v in graph.items()}
    broken["pipeline.shards.reader"].add("pipeline.train.stage")
    broken["pipeline.label.stage"].add("pipeline.evaluate.stage")
    assert rule_violations(broken) == ["pipeline.label.stage -> pipeline.evaluate.stage",
                                       "pipeline.shards.reader -> pipeline.train.stage"]
    broken["pipeline.run.storage"].add("pipeline.shards.manifest")  # the manifest imports storage
    assert ["pipeline.run.storage", "pipeline.shards.manifest"] in cycles_of(broken)


def test_a_cycle_through_package_inits_is_caught(graph):
    """pipeline.shards' __init__ imports its reader; a reader that imported the inputs package, whose
    image module read the shards' schema, would meet a package half-initialised."""
    broken = {k: set(v) for k, v in graph.items()}
    broken["pipeline.inputs.images"] |= {"pipeline.shards.schema", "pipeline.shards"}
    broken["pipeline.shards.reader"] |= {"pipeline.inputs"}
    assert any({"pipeline.shards", "pipeline.inputs"} <= set(c) for c in cycles_of(broken))
