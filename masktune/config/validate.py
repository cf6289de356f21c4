"""The whole params file checked at once, against every field the code declares (stage `check_params`).

Each stage checks only the keys it declares (`params.load_config`); this check covers the rest, so a typo in
a later stage's param stops `dvc exp run` at its first stage instead of hours later, and an unknown key (a
typo that would otherwise be ignored) is named with its closest known key. The fields come from the config
classes of the code (`schema`: key -> field, templates filled in) and the datasets' `prepare.<name>` fields;
recipe fields must have a non-null value under every dataset's recipe.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

from masktune.config.fields import Field, invalid
from masktune.config.files import lookup_key
from masktune.errors import UserError


def leaves(node: Mapping, known: Mapping[str, Field], prefix: str = "") -> Iterator[str]:
    """Every key of `node` down to its leaves; a mapping-valued param (`methods.robust_train`) is one leaf."""
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value and key not in known:
            yield from leaves(value, known, key + ".")
        else:
            yield key


def validate(values: Mapping, schema: Mapping[str, Field], datasets: Mapping[str, Mapping[str, Field]]) -> None:
    """Check every param: each key of `schema` (type and bounds), each dataset's `prepare.<name>` keys and its
    recipe (every recipe field non-null), and no key the code does not read. Raises the first problem as a
    one-line UserError naming the key."""
    if not isinstance(values, Mapping):
        raise UserError("params.yaml: expected a mapping at the top level")
    for key, field in schema.items():
        field.check(key, lookup_key(values, key))
    recipe_keys = [key for key, field in schema.items() if field.recipe]
    known = dict(schema)
    for name, fields in datasets.items():
        for key, field in fields.items():
            full = f"prepare.{name}.{key}"
            known[full] = field
            field.check(full, lookup_key(values, full))
        for key in recipe_keys:
            full = f"recipes.{name}.{key}"
            known[full] = schema[key]
            value = lookup_key(values, full)
            if value is None:
                raise invalid(full, schema[key].expected() + " (a recipe value may not be null)", value)
            schema[key].check(full, value)
    for key in leaves(values, known):
        if key not in known and key != "profile" and not key.startswith("profiles."):
            _unknown(key, known)
    validate_profiles(values, known)


def _unknown(key: str, known: Mapping[str, Field], prefix: str = "") -> None:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    raise UserError(f"params.yaml: unknown key '{prefix}{key}'{hint}")


def validate_profiles(values: Mapping, known: Mapping[str, Field]) -> None:
    """`profile` names one of `profiles`; each profile sets known keys (not the dataset, the methods or a
    recipe, which DVC or the recipe rule read directly), each value checked by the key's field."""
    profiles = values.get("profiles")
    if not isinstance(profiles, Mapping) or not profiles:
        raise invalid("profiles", "a mapping of profile names to the values they preset", profiles)
    if values.get("profile") not in profiles:
        raise invalid("profile", "one of " + ", ".join(map(repr, profiles)), values.get("profile"))
    settable = {key: field for key, field in known.items() if not _read_by_dvc_or_recipe(key)}
    for name, given in profiles.items():
        if not isinstance(given, Mapping):
            raise invalid(f"profiles.{name}", "a mapping ({} for none)", given)
        for key in leaves(given, known):
            if key not in settable:
                _unknown(key, settable, f"profiles.{name}.")
            if lookup_key(given, key) is None:
                raise UserError(f"params.yaml: profiles.{name}.{key} may not be null (leave the key out of the profile)")
            settable[key].check(f"profiles.{name}.{key}", lookup_key(given, key))


# Keys dvc.yaml templates (`${...}`): DVC reads them itself (which stages exist, their deps), so a profile's value
# would reach the stage and not DVC (tests/test_config.py checks the list against dvc.yaml).
DVC_TEMPLATED = ("dataset", "methods", "saliency.method", "exmap.heatmaps", "selective.control_seed_offsets")


def _read_by_dvc_or_recipe(key: str) -> bool:
    """Keys no profile can set: those DVC reads itself (DVC_TEMPLATED, and what lies under them), and the recipes,
    read by the recipe rule, not by a stage's key."""
    return key.startswith("recipes.") or any(key == k or key.startswith(k + ".") for k in DVC_TEMPLATED)


def merge_fields(declarations: Iterator[tuple[str, Field, str]]) -> dict[str, Field]:
    """{key: field} from (key, field, where declared) triples; a key declared twice must be declared alike
    (one key, one meaning), else ValueError naming both places."""
    schema: dict[str, Field] = {}
    where: dict[str, str] = {}
    for key, field, origin in declarations:
        if key in schema and schema[key] != field:
            raise ValueError(f"param {key!r} is declared as {schema[key]!r} in {where[key]} and as {field!r} in {origin}")
        schema.setdefault(key, field)
        where.setdefault(key, origin)
    return schema


def value_of(values: Mapping, key: str) -> Any:
    return lookup_key(values, key)
