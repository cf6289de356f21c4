"""Reading params.yaml and the params a stage declares in dvc.yaml.

DVC reruns a stage only when a param it *declares* changes, so a stage that quietly read an undeclared
key would go stale without warning: `masktune.config.stages` resolves a stage's config from the keys
`declared_params` lists for it, and refuses any other.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from masktune.errors import UserError

_TEMPLATE = re.compile(r"\$\{([\w.]+)\}")


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (run the stage from the project root)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def _render(entry: str, values: dict, item: str | None = None) -> str:
    """DVC's `${key}` templating in a params entry (`recipes.${dataset}.lr`), from params.yaml, and a
    foreach stage's `${item}`."""
    def value(match: re.Match) -> str:
        if match[1] == "item" and item is not None:
            return item
        node: Any = values
        for part in match[1].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return str(node)
    return _TEMPLATE.sub(value, entry)


def declared_params(stage: str, dvc_file: str | Path, values: dict | None = None) -> list[str]:
    """The param keys dvc.yaml lists for `stage` (from params.yaml, the default params file), with
    `${...}` templates rendered from `values` (params.yaml) as DVC renders them. A foreach stage is
    named as DVC names it, `<stage>@<item>`; its `do:` entry is read with `${item}` = item."""
    dvc_file = Path(dvc_file)
    stages = read_yaml(dvc_file).get("stages", {})
    name, _, item = stage.partition("@")
    entry = stages.get(name)
    if entry is None or bool(item) != ("foreach" in entry):
        raise UserError(f"{dvc_file}: no stage named '{stage}'")
    entry = entry["do"] if item else entry
    declared: list[str] = []
    for param in entry.get("params", []) or []:
        if isinstance(param, str):
            declared.append(param)
        elif isinstance(param, dict):  # {other_params_file: [keys]}: only params.yaml is ours
            declared.extend(k for keys in param.values() for k in (keys or []))
    return [_render(param, values or {}, item or None) for param in declared]
