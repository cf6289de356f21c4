"""The architecture holds: every stage's dvc.yaml deps are exactly the code it runs (a missing one keeps
stale outputs, an extra one reruns a stage after an unrelated edit), no import cycle, and the subpackages
depend on each other in one direction only.

Imports are read from the source (`ast`), those inside functions included: a function-level import
still runs the imported module's code, so it is a dependency for DVC and for cycles alike. A stage that
picks its method's module by name (`robust_train@<name>` imports `masktune/robust_train/<trainer>.py`)
declares it with a templated dep (`masktune/robust_train/${item.trainer}.py`): that module's closure is
the stage's too, checked for every entry of the committed params.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, committed_params

sys.path.insert(0, str(ROOT / "scripts"))
from dvc_deps import (
    closure,
    code_deps,
    exact_deps,
    import_graph,
    imported_files,
    is_code,
    project_modules,
    stage_instances,
)

# masktune's subpackages, each importing only from those before it (masktune/__init__.py says why).
LAYERS = ("errors", "precision", "seeding", "selection", "config", "io", "distributed", "methods", "data", "groups",
          "datasets", "models", "train", "saliency", "masking", "eval", "group_inference", "robust_train",
          "last_layer", "registry", "summary")


def stage_entries(dvc: dict) -> dict[str, dict]:
    """Each stage's entry; for a `foreach` stage (one per method of a kind) its `do:` template."""
    return {stage: spec.get("do", spec) for stage, spec in dvc["stages"].items()}


def code_files(deps: list[str], root: Path = ROOT) -> set[str]:
    """The Python files of the project a list of deps names (a folder: every .py file under it)."""
    files = set()
    for dep in (d.rstrip("/") for d in deps):
        if not is_code(dep):
            continue
        path = root / dep
        files |= ({str(p.relative_to(root)) for p in path.rglob("*.py")} if path.is_dir() else {dep})
    return files


def dep_mismatches(dvc: dict, params: dict, modules: dict[str, Path], root: Path = ROOT) -> dict[str, dict]:
    """Per stage instance, the files its code imports that its deps miss, and the files its deps name
    that its code does not import."""
    graph = import_graph(modules)
    found = {}
    for name, (script, entry) in stage_instances(dvc, params).items():
        needed = imported_files(script, entry["dynamic"], modules, graph, root)
        declared = code_files(entry["deps"], root)
        found[name] = {"missing": sorted(needed - declared), "extra": sorted(declared - needed)}
    return found


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


def test_dvc_yaml_code_deps_are_the_ones_scripts_dvc_deps_writes():
    """dvc.yaml's code deps are written by scripts/dvc_deps.py from the imports, not pasted: it has nothing
    to change (`python scripts/dvc_deps.py` after changing any import)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    expected = code_deps(dvc, committed_params())
    for stage, spec in stage_entries(dvc).items():
        script = f"stages/{stage}.py"
        declared = [d for d in spec["deps"] if is_code(d) and "${" not in d and d != script]
        assert script in spec["deps"] and script in expected[stage]
        assert declared == [d for d in expected[stage] if d != script], f"{stage}: run `python scripts/dvc_deps.py`"


def test_dvc_yaml_stays_readable():
    assert len((ROOT / "dvc.yaml").read_text().splitlines()) <= 550


# The stages that run no network: their import closure must stay away from the networks and the training code,
# so that an edit there (a model, the training loop) does not rerun a clustering or a report of files.
NO_NETWORK = ("prepare", "check_params", "label_groups", "materialize_masked_dataset", "exmap_groups",
              "clusterfix_clusters")


def test_no_stage_that_runs_no_network_depends_on_models_or_training():
    dvc, modules = yaml.safe_load((ROOT / "dvc.yaml").read_text()), project_modules()
    graph = import_graph(modules)
    for name, (script, entry) in stage_instances(dvc, committed_params()).items():
        if script in NO_NETWORK and script != "check_params":  # check_params reads every config: it imports all
            reached = sorted(f for f in imported_files(script, entry["dynamic"], modules, graph)
                             if f.startswith(("masktune/models/", "masktune/train/")))
            assert reached == [], f"{name} runs no network but imports {reached}"


def test_dvc_deps_are_exactly_the_code_each_stage_imports():
    """Neither missing (stale outputs) nor extra (reruns after an unrelated edit), for every stage DVC
    expands from the committed params; on failure, the exact list to declare is printed."""
    dvc, modules = yaml.safe_load((ROOT / "dvc.yaml").read_text()), project_modules()
    found = dep_mismatches(dvc, committed_params(), modules)
    wrong = {stage: problems for stage, problems in found.items() if problems["missing"] or problems["extra"]}
    if wrong:
        graph = import_graph(modules)
        instances = stage_instances(dvc, committed_params())
        hint = {stage: exact_deps(imported_files(instances[stage][0], instances[stage][1]["dynamic"], modules, graph))
                for stage in wrong}
        pytest.fail(f"deps differ from imports: {wrong}\nexact code deps: {hint}")


def test_the_deps_check_sees_a_missing_and_an_extra_dep():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    deps = dvc["stages"]["compute_saliency"]["deps"]
    deps.remove("masktune/distributed.py")  # select_device lives there
    deps.append("masktune/datasets")        # no stage after prepare imports a dataset module
    found = dep_mismatches(dvc, committed_params(), project_modules())["compute_saliency"]
    assert found["missing"] == ["masktune/distributed.py"]
    assert "masktune/datasets/celeba.py" in found["extra"] and all(f.startswith("masktune/datasets/")
                                                                   for f in found["extra"])


def test_a_pair_stage_imports_its_own_trainer_only():
    """robust_train@<name> picks its trainer's module by name: that one is a dep, the other trainers are not."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    instances = stage_instances(dvc, committed_params())
    for name, (script, entry) in instances.items():
        if script == "robust_train":
            trainer = committed_params()["methods"]["robust_train"][name.partition("@")[2]]["trainer"]
            assert [d for d in entry["deps"] if d.startswith("masktune/robust_train/")
                    and not d.endswith(("__init__.py", "base.py"))] == [f"masktune/robust_train/{trainer}.py"]


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


# The method and dataset modules each stage may import: its own (a method is one module of its role's
# package; `prepare` reads every dataset), and the modules it picks by name (its templated deps).
METHOD_PACKAGES = ("masktune/datasets/", "masktune/group_inference/", "masktune/robust_train/", "masktune/last_layer/",
                   "masktune/masking/")
EXMAP = ("masktune/group_inference/exmap.py", "masktune/group_inference/exmap_heatmaps.py",
         "masktune/group_inference/clustering.py")
CLUSTERFIX = ("masktune/group_inference/clusterfix.py", "masktune/group_inference/clusterfix_features.py",
              "masktune/group_inference/ssl.py")
OWN_MODULES = {"prepare": ("masktune/datasets/",), "label_groups": ("masktune/group_inference/labels.py",),
               "jtt_identify": ("masktune/group_inference/jtt.py",), "xrm_twins": ("masktune/group_inference/xrm.py",),
               **{stage: EXMAP for stage in ("exmap_heatmaps", "exmap_groups", "exmap_extend")},
               **{stage: CLUSTERFIX for stage in ("clusterfix_ssl", "clusterfix_features", "clusterfix_clusters")},
               "check_params": METHOD_PACKAGES}  # the whole file's check reads every method's config
SHARED = ("__init__.py", "base.py", "rules.py")  # a role's package and its contract, not a method


def test_no_stage_imports_another_methods_or_datasets_module():
    """Editing one method's module (or one dataset's) reruns its own stages only: the architecture keeps
    every other stage's import closure away from it."""
    dvc, modules = yaml.safe_load((ROOT / "dvc.yaml").read_text()), project_modules()
    graph = import_graph(modules)
    for name, (script, entry) in stage_instances(dvc, committed_params()).items():
        allowed = OWN_MODULES.get(script, ()) + tuple(entry["dynamic"])
        foreign = sorted(f for f in imported_files(script, entry["dynamic"], modules, graph)
                         if f.startswith(METHOD_PACKAGES) and not f.endswith(SHARED) and not f.startswith(allowed))
        assert foreign == [], f"{name} imports {foreign}"


def unsafe_loads(path: Path) -> list[int]:
    """Lines of `torch.load(...)` calls in `path` that do not pass `weights_only=True`: without it torch
    unpickles, so a checkpoint a user could have touched runs arbitrary code."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                lines.append(node.lineno)
    return lines


def test_every_torch_load_refuses_to_unpickle():
    found = {str(p.relative_to(ROOT)): unsafe_loads(p) for folder in ("masktune", "stages", "bench", "scripts", "tests")
             for p in sorted((ROOT / folder).rglob("*.py"))}
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_the_unpickle_check_sees_a_missing_and_a_false_weights_only(tmp_path):
    code = tmp_path / "loads.py"
    code.write_text("import torch\ntorch.load('a')\ntorch.load('b', weights_only=False)\n"
                    "torch.load('c', map_location='cpu', weights_only=True)\n")
    assert unsafe_loads(code) == [2, 3]
