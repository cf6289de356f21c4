"""Stage `check_params`: the whole params.yaml checked once, against every field the code declares, before any
other stage runs.

Each stage checks only the keys it declares (masktune/config/params.py); this stage checks every key of the
file (masktune/config/validate.py): the fields of every config class of the pipeline and of every method of the
registry (masktune/methods: the names each `methods` family accepts, the trainers pairs may name, the groups
files the listed group inference writes), every dataset's `prepare.<name>` keys and recipe, and no unknown key.
It depends on params.yaml as a file (not as params, whose every value DVC would copy into dvc.lock), so DVC runs
it first whenever the file changes, and writes one constant stamp per name a `foreach` stage is made of,
`<out>/<name>` (the methods and pairs of `methods`, the control's seed offsets). Every `foreach` stage depends
on its own name's stamp: a valid change reruns no stage through it, and a stage whose name has no stamp (shell
characters, say: DVC pastes the name into its command unquoted) is refused by DVC itself ("No such file")
before its command is run, even by `dvc repro -s <that stage>`. It also writes `<out>/_profile`, the chosen
profile's values, which every stage that reads a param depends on (masktune/config/files.py PROFILE_STAMP):
switching profiles reruns them, editing a profile not in use reruns none.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from masktune.config.fields import RUN_SEED, Choice, Field, MethodLists, NameList, Pairs
from masktune.config.files import PROFILE_STAMP, read_yaml
from masktune.config.params import config_params
from masktune.config.validate import merge_fields, validate
from masktune.datasets import DATASETS
from masktune.errors import UserError, run_stage
from masktune.io.files import atomic_directory
from masktune.last_layer import SELECTIONS as LAST_LAYER_SELECTIONS
from masktune.methods import Spec
from masktune.registry import family_names, group_files, pipeline_configs, specs, trainer_names
from masktune.selection import SELECTIONS

STAMP = b"a valid name of params.yaml (stage check_params)\n"
# `<out>/_profile`: the chosen profile's values, which `prepare` (the first stage after this one) depends on too
# (no name of `methods` starts with "_")
PROFILE_FILE = Path(PROFILE_STAMP).name


def profile_bytes(values: Mapping) -> bytes:
    """The chosen profile's values, canonical JSON (sorted keys): the same values give the same bytes, so
    editing a profile not in use, or switching between profiles that preset the same values, reruns nothing."""
    return (json.dumps(values["profiles"][values["profile"]], sort_keys=True) + "\n").encode()


def declarations(registry: Mapping[str, Spec]) -> Iterator[tuple[str, Field, str]]:
    """(params key, field, where declared) of every config field of the pipeline and of every method, templates
    filled in (`${trainer}`: each trainer's section); a pair's own keys (`${name}`) are its `methods` entry's."""
    yield "seed", RUN_SEED, "masktune.config.fields"  # every section's seed left null (`fallback`)
    for config in pipeline_configs().values():
        for key, field in config_params(config).items():
            yield key, field, config.__name__
    for spec in registry.values():
        for config in spec.configs.values():
            for key, field in config_params(config).items():
                if "${name}" not in key:
                    yield key.replace("${trainer}", spec.name), field, f"{spec.module}.{config.__name__}"


def schema(registry: Mapping[str, Spec]) -> dict[str, Field]:
    """{params key: field} of the whole file: the code's declarations, the `dataset` among the registered
    datasets, and each family of `methods` among the registry's names."""
    fields = {key: field for key, field in merge_fields(declarations(registry)).items()
              if not isinstance(field, MethodLists)}
    fields["dataset"] = Choice(options=tuple(DATASETS))
    for family, names in family_names(registry).items():
        fields[f"methods.{family}"] = NameList(options=names)
    fields["methods.robust_train"] = Pairs(trainers=trainer_names(registry, "robust_train"), selections=SELECTIONS)
    fields["methods.last_layer"] = Pairs(trainers=trainer_names(registry, "last_layer"), selections=LAST_LAYER_SELECTIONS)
    return fields


def check_pairs(registry: Mapping[str, Spec], methods: Mapping) -> None:
    """Every pair reads a groups file the listed group inference writes, and no two models share a name."""
    files = group_files(registry, methods)
    names = [*methods["erm"], *methods["masking"]]
    for kind in ("robust_train", "last_layer"):
        for name, pair in methods[kind].items():
            if pair["groups"] not in files:
                raise UserError(f"params.yaml: methods.{kind}.{name}.groups is {pair['groups']!r}, which no listed group "
                                f"inference writes (written: {', '.join(files) or 'none'}; e.g. list exmap in "
                                "methods.exmap for exmap_global and exmap_local)")
            if name in names:
                raise UserError(f"params.yaml: methods.{kind}.{name}: the name {name!r} is already a model of `methods`")
            names.append(name)


def check(values: Mapping) -> list[str]:
    """Validate the whole params file; the names `foreach` stages are made of."""
    registry = specs()
    validate(values, schema(registry), {name: spec.params for name, spec in DATASETS.items()})
    check_pairs(registry, values["methods"])
    names = {str(name) for family in values["methods"].values() for name in family}
    return sorted(names | {str(offset) for offset in values["selective"]["control_seed_offsets"]})


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder of stamps, one per valid name")
    args = parser.parse_args()

    values = read_yaml("params.yaml")
    names = check(values)
    with atomic_directory(args.out) as folder:
        for name in names:
            (folder / name).write_bytes(STAMP)
        (folder / PROFILE_FILE).write_bytes(profile_bytes(values))


if __name__ == "__main__":
    main()
