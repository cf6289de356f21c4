"""Reading params.yaml and the params a stage declares in dvc.yaml.

DVC reruns a stage only when a param it *declares* changes, so a stage that quietly read an undeclared
key would go stale without warning: `masktune.config.stages` resolves a stage's config from the keys
`declared_params` lists for it, and refuses any other.

Both files are read exactly as DVC reads them (`dvc.utils.serialize._yaml.parse_yaml`: ruamel.yaml's safe
loader, YAML 1.2), so a stage sees the value `dvc.lock` records. PyYAML reads YAML 1.1, where the
`1e-05` that `dvc exp run -S lr=0.00001` writes is a string, `010` is octal 8 and `yes` is true.
"""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from masktune.errors import UserError
from masktune.io.files import before_commit

_TEMPLATE = re.compile(r"\$\{([\w.]+)\}")
# The chosen profile's values as stage `check_params` writes them (canonical JSON). A stage that depends on this
# file declares the profile: it reads `profiles.<profile>` as if dvc.yaml listed that key in its params. A file
# of a few bytes in dvc.lock, where the key would copy every value of the profile into each stage's entry of
# the lock, which DVC reads and rewrites after every stage (docs/pipeline.md).
PROFILE_STAMP = "data/checked_names/_profile"
PROFILE_PARAM = "profiles.${profile}"


def parse_yaml(text: str) -> Any:
    """`text` as DVC parses a params or dvc.yaml file (YAML 1.2, ruamel.yaml's safe loader)."""
    return YAML(typ="safe").load(text)


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file, a copy the caller may change. The file is read every time; its text is
    parsed once per process (`evaluate` checks the params of every checkpoint it loads against params.yaml and
    dvc.yaml: 36 parses of the same two files before, about a fifth of its time on the e2e project)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (run the stage from the project root)")
    try:
        data = _parsed(path.read_text())
    except YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return copy.deepcopy(data)


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> Any:
    """`parse_yaml(text)`, kept by the text itself: an edited file is parsed again, whatever its timestamps."""
    return parse_yaml(text)


def lookup_key(values: Any, key: str) -> Any:
    """The value at dotted `key` of params.yaml; UserError naming the key when it is missing."""
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"params.yaml: missing key '{key}'")
        node = node[part]
    return node


def declared_values(stage: str, params_file: str | Path = "params.yaml", dvc_file: str | Path = "dvc.yaml") -> dict:
    """{key: its value in params.yaml} of every param dvc.yaml declares for `stage` (sections whole): what a
    stage's outputs were made with, as DVC records it in dvc.lock."""
    values = read_yaml(params_file)
    return {key: value_at(values, key) for key in declared_params(stage, dvc_file, values)}


def value_at(values: Any, dotted: str) -> Any:
    """The value at dotted key `dotted` of `values`, None where a part is missing."""
    node = values
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _render(entry: str, values: dict, context: dict) -> str:
    """DVC's `${key}` templating in a params entry (`recipes.${dataset}.lr`), from params.yaml, and a
    foreach stage's `${item}`, `${item.<field>}` (a dict item: a (groups, trainer) pair) and `${key}`."""
    def value(match: re.Match) -> str:
        head = match[1].split(".")[0]
        return str(value_at(context, match[1]) if head in context else value_at(values, match[1]))
    return _TEMPLATE.sub(value, entry)


def declared_params(stage: str, dvc_file: str | Path, values: dict | None = None) -> list[str]:
    """The param keys dvc.yaml lists for `stage` (from params.yaml, the default params file), with
    `${...}` templates rendered from `values` (params.yaml) as DVC renders them. A foreach stage is
    named as DVC names it, `<stage>@<item>` (or `<stage>@<key>` over a mapping); its `do:` entry is read
    with `${item}` = item (or `${key}` = key and `${item}` = the mapping's value there)."""
    dvc_file, values = Path(dvc_file), values or {}
    stages = read_yaml(dvc_file).get("stages", {})
    name, _, item = stage.partition("@")
    entry = stages.get(name)
    if entry is None or bool(item) != ("foreach" in entry):
        raise UserError(f"{dvc_file}: no stage named '{stage}'")
    context: dict = {}
    if item:
        source = _TEMPLATE.fullmatch(str(entry["foreach"]))
        over = value_at(values, source[1]) if source else None
        context = {"key": item, "item": over[item]} if isinstance(over, dict) and item in over else {"item": item}
        entry = entry["do"]
    declared: list[str] = []
    for param in entry.get("params", []) or []:
        if isinstance(param, str):
            declared.append(param)
        elif isinstance(param, dict):  # {other_params_file: [keys]}: only params.yaml is ours
            declared.extend(k for keys in param.values() for k in (keys or []))
    if PROFILE_STAMP in (entry.get("deps") or []):
        declared.append(PROFILE_PARAM)
    return [_render(param, values, context) for param in declared]


def refuse_to_finish_if_params_change(stage: str, params_file: str | Path, declared: list[str], values: dict) -> None:
    """Make every output write of this stage fail, with one line, once a param it declared (`declared`,
    read as `values` when it started) has another value in `params_file`: DVC would otherwise record the
    new value in dvc.lock for outputs made with the old one (an edit, or a `dvc exp run -S` refused
    because the workspace is busy, both leave params.yaml changed) and report them up to date. The file is
    re-read only when its size or modification time changed."""
    path = Path(params_file).resolve()
    started = {key: value_at(values, key) for key in declared}
    seen = [_stamp(path)]

    def check() -> None:
        stamp = _stamp(path)
        if stamp in (seen[0], None):  # unchanged, or gone (nothing to compare with)
            return
        try:
            now = parse_yaml(path.read_text())
        except (OSError, YAMLError):
            now = None
        if not isinstance(now, dict):
            raise UserError(f"{path} became unreadable while stage '{stage}' ran: it refuses to write outputs")
        changed = [key for key in declared if value_at(now, key) != started[key]]
        if changed:
            shown = ", ".join(f"{key}: {started[key]!r} -> {value_at(now, key)!r}" for key in changed[:3])
            raise UserError(f"{path} changed while stage '{stage}' ran ({shown}{', ...' if len(changed) > 3 else ''}):"
                            " it refuses to write outputs made with the old values; `dvc repro` runs it again")
        seen[0] = stamp
    before_commit(("params", stage, str(path)), check)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size
