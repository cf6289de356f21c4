"""The mechanism of params: a config class declares its fields beside the code that reads them, and a stage
resolves its own config from the keys dvc.yaml declares for it.

A config is a frozen dataclass whose fields are `param(key, field)`: the params.yaml key it is read from
and the `fields.Field` that checks it, so a method's params live in the method's module (DomainBed's
hparams registry, per module). Keys may hold templates a stage fills in: `${dataset}` (the `dataset`
param), `${name}` (the item of a `foreach` stage: a pair's name), `${trainer}` (the trainer of that pair).
A field with `recipe=True` left null takes `recipes.<dataset>.<key>` (one naming rule for every official
recipe); a field with a `fallback` left null takes that top-level key (every section's seed: `seed`). Above
all three, a key the chosen profile sets takes the profile's value, `profiles.<profile>.<key>` (`profile:
quick`: a first run on a subset, one epoch per network; `full`, the default, sets nothing): a profile is a
preset, changed where it is written (`-S profiles.quick.train_erm.epochs=2`). `load_config(Config, stage)`
reads params.yaml as DVC reads it, checks the *declared* keys only (the whole file is checked once, by the `check_params` stage, which every stage depends on: masktune/
config/validate.py), and refuses to read a key dvc.yaml does not declare for the stage: DVC would not rerun
the stage when that key changed.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

from masktune.config.fields import Choice, Field, Text, invalid
from masktune.config.files import declared_params, lookup_key, read_yaml, refuse_to_finish_if_params_change, value_at
from masktune.errors import UserError

# How a stage was launched, not what it computes: left out of the config a checkpoint records.
LAUNCH_SETTINGS = ("nproc_per_node", "nnodes", "master_addr", "master_port", "workers")


def param(key: str, field: Field):
    """A config field read from params key `key` and checked by `field`."""
    return dataclasses.field(metadata={"key": key, "field": field})


def section(key: str, fields: dict[str, Field] | None = None):
    """A config field holding a whole params section (`prepare.${dataset}`), each key checked by its field in
    `fields`, or by the fields the stage supplies at load time (`load_config(..., sections=...)`)."""
    return dataclasses.field(metadata={"key": key, "section": fields})


def config_params(config_cls) -> dict[str, Field]:
    """{params key (templates kept): its field} of a config class's `param` fields."""
    return {f.metadata["key"]: f.metadata["field"] for f in dataclasses.fields(config_cls) if "field" in f.metadata}


def recorded_config(config) -> dict:
    """A stage config as a checkpoint records it: JSON values (paths as strings), how the stage was launched
    (`LAUNCH_SETTINGS`) left out, since the model is the same either way."""
    values = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return {key: value for key, value in values.items() if key not in LAUNCH_SETTINGS}


DATASET = Text()  # the dataset's name; which names exist is the registry's (checked by check_params and prepare)


class Resolver:
    """Reads the declared keys of one stage, checked by their fields, the recipe rule applied."""

    def __init__(self, stage: str, values: dict, declared: list[str]):
        self.stage, self.values, self.declared = stage, values, declared
        self.item = stage.partition("@")[2]

    def read(self, key: str) -> Any:
        if not any(key == d or key.startswith(d + ".") for d in self.declared):
            raise UserError(f"stage '{self.stage}' reads param '{key}' but dvc.yaml does not declare it "
                            f"(declared: {', '.join(self.declared)})")
        return lookup_key(self.values, key)

    def dataset(self) -> str:
        name = DATASET.check("dataset", self.read("dataset"))
        if not isinstance(self.values.get("recipes"), dict) or name not in self.values["recipes"]:
            raise invalid("dataset", "the name of a dataset with a recipe under `recipes`", name)
        return name

    def render(self, key: str) -> str:
        if "${dataset}" in key:
            key = key.replace("${dataset}", self.dataset())
        key = key.replace("${name}", self.item)
        if "${trainer}" in key:  # a pair's trainer section (robust_train@<name>)
            kind = self.stage.partition("@")[0]
            key = key.replace("${trainer}", str(self.read(f"methods.{kind}.{self.item}.trainer")))
        return key

    def profile_value(self, key: str) -> tuple[str, Any] | None:
        """(its key, the value) the chosen profile gives `key`, or None where it gives none. A stage that can
        take a profile's value depends on the profile's stamp in dvc.yaml (files.PROFILE_STAMP, which declares
        `profiles.${profile}`; read checks it), so that DVC reruns it when the profile, or a value of it, changes."""
        profiles, name = self.values.get("profiles"), self.values.get("profile")
        if not isinstance(profiles, dict) or value_at(profiles.get(name), key) is None:
            return None
        full = f"profiles.{name}.{key}"
        return full, self.read(full)

    def resolve(self, key: str, field: Field) -> Any:
        key = self.render(key)
        profiled = self.profile_value(key)
        if profiled is not None:
            return field.check(*profiled)
        value = self.read(key)
        if value is None and field.fallback:  # a section's seed left null: the run's
            value = self.read(field.fallback)
            if value is None:
                raise invalid(field.fallback, dataclasses.replace(field, fallback=None).expected(), value)
            return field.check(field.fallback, value)
        if value is None and field.recipe:
            recipe_key = f"recipes.{self.dataset()}.{key}"
            value = self.read(recipe_key)
            if value is None:
                raise invalid(recipe_key, field.expected() + " (a recipe value may not be null)", value)
            return field.check(recipe_key, value)
        return field.check(key, value)

    def resolve_section(self, key: str, fields) -> MappingProxyType:
        key = self.render(key)
        fields = fields(key) if callable(fields) else fields
        values = self.read(key)
        if not isinstance(values, dict):
            raise invalid(key, "a mapping", values)
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UserError(f"params.yaml: unknown key '{key}.{unknown[0]}'")
        return MappingProxyType({name: field.check(*(self.profile_value(f"{key}.{name}")
                                                     or (f"{key}.{name}", values.get(name))))
                                 for name, field in fields.items()})


def load_config(config_cls, stage: str, params_file: str | Path = "params.yaml", dvc_file: str | Path = "dvc.yaml",
                sections: dict | None = None):
    """The typed config of `stage` (a `config_cls` instance) from the keys dvc.yaml declares for it, each
    checked by its field; `sections`: the fields of a `section` the stage knows only at run time, by field
    name, or a function of the section's key (its dataset's `prepare.<name>` keys). A config may derive a value from the stage's item (`derive_from_item`:
    the control's seed). The stage then refuses to write outputs once a declared key changes under it."""
    values = read_yaml(params_file)
    declared = declared_params(stage, dvc_file, values)
    resolver = Resolver(stage, values, declared)
    resolved = {}
    for f in dataclasses.fields(config_cls):
        if "field" in f.metadata:
            resolved[f.name] = resolver.resolve(f.metadata["key"], f.metadata["field"])
        elif "section" in f.metadata:
            fields = f.metadata["section"] or (sections or {}).get(f.name)
            if fields is None:
                raise ValueError(f"{config_cls.__name__}.{f.name}: a section needs its fields")
            resolved[f.name] = resolver.resolve_section(f.metadata["key"], fields)
    config = config_cls(**resolved)
    derive = getattr(config, "derive_from_item", None)
    if derive is not None:
        config = derive(stage.partition("@")[2])
    refuse_to_finish_if_params_change(stage, params_file, declared, values)
    return config


def choice(*options: str, **kwargs) -> Choice:
    """A `Choice` of `options` (shorthand for config declarations)."""
    return Choice(options=tuple(options), **kwargs)
