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


def _render(entry: str, values: dict) -> str:
    """DVC's `${key}` templating in a params entry (`recipes.${dataset}.lr`), from params.yaml."""
    def value(match: re.Match) -> str:
        node: Any = values
        for part in match[1].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return str(node)
    return _TEMPLATE.sub(value, entry)


def declared_params(stage: str, dvc_file: str | Path, values: dict | None = None) -> list[str]:
    """The param keys dvc.yaml lists for `stage` (from params.yaml, the default params file), with
    `${...}` templates rendered from `values` (params.yaml) as DVC renders them."""
    dvc_file = Path(dvc_file)
    stages = read_yaml(dvc_file).get("stages", {})
    if stage not in stages:
        raise UserError(f"{dvc_file}: no stage named '{stage}'")
    declared: list[str] = []
    for entry in stages[stage].get("params", []) or []:
        if isinstance(entry, str):
            declared.append(entry)
        elif isinstance(entry, dict):  # {other_params_file: [keys]}: only params.yaml is ours
            declared.extend(k for keys in entry.values() for k in (keys or []))
    return [_render(entry, values or {}) for entry in declared]
