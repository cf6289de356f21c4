"""Write every dvc.yaml stage's code deps from the code itself: exactly the files the stage's script imports.

    python scripts/dvc_deps.py           # rewrite the code deps of every stage of dvc.yaml in place
    python scripts/dvc_deps.py --check   # exit 1, naming the stages, where they differ (tests do this)

A stage's deps are the data it reads, which dvc.yaml's author writes (data files, the `check_params` stamp,
templated modules a stage picks by name: `masktune/robust_train/${item.trainer}.py`), and its code, which
this script writes: the import closure of `stages/<stage>.py` (imports inside functions included: they run the
imported module's code), with the modules a `foreach` stage picks by name followed for every instance the
committed params expand to, each folder whose every Python file is imported named as the folder. A missing
dep keeps stale outputs and an extra one reruns hours of training after an unrelated edit, so the list is
computed, never pasted; tests/test_architecture.py fails when dvc.yaml and the code disagree. The code deps
are written as one YAML flow list after the data deps, wrapped at the line length.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("masktune", "stages")
WIDTH = 120
_TEMPLATE = re.compile(r"\$\{([\w.]+)\}")


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
    for module, targets in discovered(modules).items():
        graph[module] |= targets
    return graph


def discovered(modules: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the modules it imports by name}: a module-level `DISCOVERS = ("<package>", ...)` declares the
    packages whose every module it imports (a registry found by scanning its package: the datasets)."""
    found = {}
    for module, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DISCOVERS" for t in node.targets)
                    and isinstance(node.value, ast.Tuple)):
                packages = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
                found[module] = {m for m in modules for p in packages if m.startswith(p + ".")}
    return found


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def lookup(values: dict, dotted: str):
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def render(entry: str, values: dict, context: dict) -> str:
    """DVC's `${key}` templating: from `context` (a foreach stage's `item`, `key`) or params.yaml."""
    def value(match: re.Match) -> str:
        head = match[1].split(".")[0]
        return str(lookup(context, match[1]) if head in context else lookup(values, match[1]))
    return _TEMPLATE.sub(value, entry)


def stage_instances(dvc: dict, params: dict) -> dict[str, tuple[str, dict]]:
    """{DVC's stage name (`robust_train@jtt`): (the stage's script, its entry with `${...}` rendered)} for
    `params`, as DVC expands `foreach` over a list or a mapping; templated code deps are kept beside as
    `dynamic` (a module the stage picks by name)."""
    instances = {}
    for stage, spec in dvc["stages"].items():
        if "foreach" not in spec:
            deps = [render(str(d), params, {}) for d in spec.get("deps", [])]
            dynamic = [render(str(d), params, {}) for d in spec.get("deps", []) if "${" in str(d)]
            instances[stage] = (stage, {**spec, "cmd": render(spec["cmd"], params, {}), "deps": deps,
                                        "dynamic": dynamic})
            continue
        over = lookup(params, spec["foreach"][2:-1])  # foreach: ${methods.<kind>}
        for key in (over if isinstance(over, dict) else over or []):
            context = {"key": key, "item": over[key]} if isinstance(over, dict) else {"item": key}
            entry = spec["do"]
            deps = [render(str(d), params, context) for d in entry["deps"]]
            dynamic = [render(str(d), params, context) for d in entry["deps"] if "${" in str(d)]
            instances[f"{stage}@{key}"] = (stage, {**entry, "cmd": render(entry["cmd"], params, context),
                                                   "deps": deps, "dynamic": dynamic})
    return instances


def is_code(dep: str) -> bool:
    return dep.startswith(tuple(f"{p}/" for p in PACKAGES)) or dep in PACKAGES


def imported_files(script: str, dynamic: list[str], modules: dict[str, Path], graph: dict[str, set[str]],
                   root: Path = ROOT) -> set[str]:
    """The files the stage's script imports, transitively, and the modules it picks by name."""
    roots = [f"stages.{script}", *(d.removesuffix(".py").replace("/", ".") for d in dynamic if d.endswith(".py"))]
    return {str(modules[m].relative_to(root)) for start in roots for m in closure(graph, start)}


def exact_deps(needed: set[str], root: Path = ROOT) -> list[str]:
    """The shortest dep list naming exactly `needed`: a folder where every .py file under it is needed."""
    deps, covered = [], set()
    for folder in sorted({str(Path(f).parent) for f in needed}, key=lambda f: f.count("/")):
        files = {str(p.relative_to(root)) for p in (root / folder).rglob("*.py")}
        if folder not in PACKAGES and files <= needed and not any(folder.startswith(d + "/") for d in deps):
            deps.append(folder)
            covered |= files
    return sorted(deps + [f for f in needed if f not in covered])


def code_deps(dvc: dict, params: dict, root: Path = ROOT) -> dict[str, list[str]]:
    """{stage of dvc.yaml: its code deps}: the union over its instances of the files they import, less the
    modules it picks by name (named by its templated deps), as the shortest list (`exact_deps`)."""
    modules = project_modules(root)
    graph = import_graph(modules)
    needed: dict[str, set[str]] = {}
    dynamic: dict[str, set[str]] = {}
    for script, entry in stage_instances(dvc, params).values():
        needed.setdefault(script, set()).update(imported_files(script, entry["dynamic"], modules, graph, root))
        dynamic.setdefault(script, set()).update(d for d in entry["dynamic"] if is_code(d))
    return {stage: exact_deps(needed.get(stage, set()) - dynamic.get(stage, set()), root) for stage in dvc["stages"]}


def _flow_item(dep: str) -> str:
    return f'"{dep}"' if any(c in dep for c in "{}[],: #") else dep


def flow_lines(items: list[str], indent: int) -> list[str]:
    """`deps: [a, b, ...]` wrapped at WIDTH, continuation lines under the first item."""
    head = " " * indent + "deps: ["
    lines, line = [], head
    for i, item in enumerate(items):
        text = _flow_item(item) + ("]" if i == len(items) - 1 else ",")
        if len(line) + len(text) + 1 > WIDTH and line.strip() not in ("deps: [",):
            lines.append(line.rstrip())
            line = " " * len(head) + text
        else:
            line += ("" if line.endswith("[") else " ") + text
    lines.append(line)
    return lines


def rewrite(text: str, deps: dict[str, list[str]]) -> str:
    """dvc.yaml `text` with each stage's deps: its data deps as they are, then its code (`deps`)."""
    dvc = yaml.safe_load(text)
    lines, out, i = text.split("\n"), [], 0
    stage = None
    while i < len(lines):
        line = lines[i]
        match = re.match(r"^  ([a-z_]+):\s*$", line)
        if match:
            stage = match[1]
        dep = re.match(r"^(\s+)deps:", line)
        if dep and stage in deps:
            indent = len(dep[1])
            spec = dvc["stages"][stage]
            entry = spec.get("do", spec)
            data = [str(d) for d in entry.get("deps", []) if not is_code(str(d)) or "${" in str(d)]
            script = f"stages/{stage}.py"
            i += 1  # skip the old list: every line indented deeper than `deps:` (block items, comments, a flow list)
            while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > indent:
                i += 1
            out.extend(flow_lines(data + [script] + [d for d in deps[stage] if d != script], indent))
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say which stages' deps differ (exit 1)")
    parser.add_argument("--dvc-file", type=Path, default=ROOT / "dvc.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    text = args.dvc_file.read_text()
    dvc, params = yaml.safe_load(text), yaml.safe_load(args.params.read_text())
    new = rewrite(text, code_deps(dvc, params))
    if args.check:
        differ = [s for s in dvc["stages"] if yaml.safe_load(new)["stages"][s] != dvc["stages"][s]]
        if differ:
            sys.exit(f"dvc.yaml: the code deps of {', '.join(differ)} differ from their imports: "
                     "python scripts/dvc_deps.py")
        return
    args.dvc_file.write_text(new)
    print(f"{args.dvc_file}: code deps of {len(dvc['stages'])} stages written")


if __name__ == "__main__":
    main()
