"""The architecture holds: every stage's dvc.yaml deps cover the code it runs, no import cycle, and the
subpackages depend on each other in one direction only.

Imports are read from the source (`ast`), those inside functions included: a function-level import
still runs the imported module's code, so it is a dependency for DVC and for cycles alike.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PACKAGES = ("masktune", "stages")
# masktune's subpackages, each importing only from those before it (masktune/__init__.py says why).
LAYERS = ("errors", "config", "io", "distributed", "data", "datasets", "models", "train", "saliency", "masking", "eval",
          "methods")


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imported_names(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(modules: dict[str, Path], packages: bool = True) -> dict[str, set[str]]:
    """module -> the project modules its code imports, and with `packages` the packages (`__init__`)
    Python runs on the way to them: code a stage runs (for its deps), but no import of the module's
    (a package's registry importing its submodules is no cycle, as the shared import-cycles tool counts)."""
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(module, path):
            target = resolve(name)
            while target:
                if target != module:
                    targets.add(target)
                target = resolve(target.rpartition(".")[0]) if packages and "." in target else None
        graph[module] = targets
    return graph


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def stage_entries(dvc: dict) -> dict[str, dict]:
    """Each stage's entry; for a `foreach` stage (one per method of a kind) its `do:` template."""
    return {stage: spec.get("do", spec) for stage, spec in dvc["stages"].items()}


def uncovered_modules(dvc: dict, modules: dict[str, Path], root: Path = ROOT) -> dict[str, list[str]]:
    """Per stage, the files its code imports (transitively) that its dvc.yaml deps do not cover."""
    graph = import_graph(modules)
    missing = {}
    for stage, spec in stage_entries(dvc).items():
        deps = [d.rstrip("/") for d in spec["deps"]]
        files = sorted(str(modules[m].relative_to(root)) for m in closure(graph, f"stages.{stage}"))
        missing[stage] = [f for f in files if not any(f == d or f.startswith(d + "/") for d in deps)]
    return missing


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module."""
    found = []
    for module in graph:
        component = {m for m in closure(graph, module) if module in closure(graph, m)}
        if len(component) > 1 and component not in found:
            found.append(component)
    return found


def test_every_stage_runs_its_script_and_depends_on_it():
    for stage, spec in stage_entries(yaml.safe_load((ROOT / "dvc.yaml").read_text())).items():
        assert spec["cmd"].startswith(f"python -m stages.{stage} "), stage
        assert f"stages/{stage}.py" in spec["deps"], stage


def test_dvc_deps_cover_every_module_each_stage_imports():
    missing = uncovered_modules(yaml.safe_load((ROOT / "dvc.yaml").read_text()), project_modules())
    assert missing == {stage: [] for stage in missing}, "add these files or their folders to the stage's deps"


def test_the_deps_check_fails_when_a_dep_is_removed():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc["stages"]["compute_saliency"]["deps"].remove("masktune/distributed.py")  # select_device lives there
    assert uncovered_modules(dvc, project_modules())["compute_saliency"] == ["masktune/distributed.py"]


def test_no_import_cycle_even_through_function_level_imports():
    assert cycles(import_graph(project_modules(), packages=False)) == []


def test_the_cycle_check_sees_function_level_imports(tmp_path):
    (tmp_path / "masktune").mkdir()
    (tmp_path / "stages").mkdir()
    (tmp_path / "masktune" / "__init__.py").write_text("")
    (tmp_path / "masktune" / "a.py").write_text("from masktune.b import g\n")
    (tmp_path / "masktune" / "b.py").write_text("def g():\n    from masktune.a import f\n")
    assert cycles(import_graph(project_modules(tmp_path), packages=False)) == [{"masktune.a", "masktune.b"}]


@pytest.mark.parametrize("layer", LAYERS)
def test_subpackages_import_only_the_layers_before_them(layer):
    graph = import_graph(project_modules())
    allowed = {f"masktune.{name}" for name in LAYERS[:LAYERS.index(layer) + 1]} | {"masktune"}
    own = [m for m in graph if m == f"masktune.{layer}" or m.startswith(f"masktune.{layer}.")]
    assert own, f"no subpackage masktune.{layer}"
    for module in own:
        bad = sorted(t for t in graph[module] if not any(t == a or t.startswith(a + ".") for a in allowed))
        assert bad == [], f"{module} imports {bad}, a later layer than {layer}"


def test_every_subpackage_is_in_a_layer():
    names = {p.name.removesuffix(".py") for p in (ROOT / "masktune").iterdir()
             if p.name != "__init__.py" and (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert names == set(LAYERS)
