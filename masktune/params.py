"""Typed, validated access to the params a stage declares in dvc.yaml.

DVC reruns a stage only when a param it *declares* changes, so a script that quietly reads an
undeclared key goes stale without warning. `load_stage_params` therefore hands a stage only the keys
its dvc.yaml entry lists, and every getter checks type and range, naming the key in its message.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from masktune.errors import UserError

_MISSING = object()
_TEMPLATE = re.compile(r"\$\{([\w.]+)\}")


class StageParams:
    """The params one stage may read, with getters that validate as they read."""

    def __init__(self, stage: str, values: dict, declared: Sequence[str], source: str = "params.yaml"):
        self.stage = stage
        self.values = values
        self.declared = list(declared)
        self.source = source

    def _raw(self, key: str) -> Any:
        if not any(key == d or key.startswith(d + ".") for d in self.declared):
            raise UserError(
                f"stage '{self.stage}' reads param '{key}' but dvc.yaml does not declare it "
                f"(declared: {', '.join(self.declared)})"
            )
        node: Any = self.values
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"{self.source}: missing key '{key}'")
            node = node[part]
        return node

    def recipe_key(self, key: str, recipe_field: str) -> str:
        """`key` when it is set, else `recipes.<dataset>.<recipe_field>`: the key whose value applies.

        Hyperparameters that differ between datasets (learning rate, epochs, architecture, ...) are
        null in the stage's section by default and come from the dataset's official recipe, so that
        `dvc exp run -S dataset=waterbirds` runs the official Waterbirds recipe; setting the stage's
        key overrides it. Pass the result to a typed getter, so a message names the key that was read.
        """
        return key if self._raw(key) is not None else self.recipe_field(recipe_field)

    def recipe_field(self, field: str) -> str:
        """`recipes.<dataset>.<field>`, checked to be declared and present."""
        recipe = f"recipes.{self._raw('dataset')}"
        self._raw(recipe)
        return f"{recipe}.{field}"

    def _fail(self, key: str, expected: str, value: Any) -> UserError:
        return UserError(f"{self.source}: {key} must be {expected}, got {value!r}")

    def integer(self, key: str, minimum: int | None = None, maximum: int | None = None,
                optional: bool = False) -> int | None:
        value = self._raw(key)
        if value is None and optional:
            return None
        expected = _describe("an integer", minimum, maximum, optional)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, expected, value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self._fail(key, expected, value)
        return value

    def number(self, key: str, minimum: float | None = None, maximum: float | None = None,
               optional: bool = False, exclusive_minimum: bool = False) -> float | None:
        value = self._raw(key)
        if value is None and optional:
            return None
        expected = _describe("a number", minimum, maximum, optional, exclusive_minimum)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._fail(key, expected, value)
        if minimum is not None and (value < minimum or (exclusive_minimum and value == minimum)):
            raise self._fail(key, expected, value)
        if maximum is not None and value > maximum:
            raise self._fail(key, expected, value)
        return float(value)

    def choice(self, key: str, options: Sequence[str]) -> str:
        value = self._raw(key)
        if value not in options:
            raise self._fail(key, "one of " + ", ".join(repr(o) for o in options), value)
        return value

    def boolean(self, key: str) -> bool:
        value = self._raw(key)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def optional_path(self, key: str) -> Path | None:
        value = self._raw(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a path (string) or null", value)
        return Path(value)

    def int_list(self, key: str, length: int, minimum: int, maximum: int) -> list[int]:
        value = self._raw(key)
        expected = f"a list of {length} integers in [{minimum}, {maximum}]"
        if not isinstance(value, list) or len(value) != length or any(
            isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= maximum for v in value
        ):
            raise self._fail(key, expected, value)
        return list(value)


def _describe(kind: str, minimum, maximum, optional: bool, exclusive_minimum: bool = False) -> str:
    text = kind
    if minimum is not None:
        text += f" {'>' if exclusive_minimum else '>='} {minimum}"
    if maximum is not None:
        text += f" {'and ' if minimum is not None else ''}<= {maximum}"
    return text + (" or null" if optional else "")


def _read_yaml(path: Path) -> dict:
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
    """DVC's `${key}` templating in a params entry (`recipes.${dataset}`), from params.yaml."""
    def value(match: re.Match) -> str:
        node: Any = values
        for part in match[1].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return str(node)
    return _TEMPLATE.sub(value, entry)


def declared_params(stage: str, dvc_file: Path, values: dict | None = None) -> list[str]:
    """The param keys dvc.yaml lists for `stage` (from params.yaml, the default params file), with
    `${...}` templates rendered from `values` (params.yaml) as DVC renders them."""
    stages = _read_yaml(dvc_file).get("stages", {})
    if stage not in stages:
        raise UserError(f"{dvc_file}: no stage named '{stage}'")
    declared: list[str] = []
    for entry in stages[stage].get("params", []) or []:
        if isinstance(entry, str):
            declared.append(entry)
        elif isinstance(entry, dict):  # {other_params_file: [keys]}: only params.yaml is ours
            declared.extend(k for keys in entry.values() for k in (keys or []))
    return [_render(entry, values or {}) for entry in declared]


def load_stage_params(stage: str, params_file: str | Path = "params.yaml",
                      dvc_file: str | Path = "dvc.yaml") -> StageParams:
    """Load params.yaml, restricted to what dvc.yaml declares for `stage`."""
    params_file, dvc_file = Path(params_file), Path(dvc_file)
    values = _read_yaml(params_file)
    return StageParams(stage, values, declared_params(stage, dvc_file, values), str(params_file))
