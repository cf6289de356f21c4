"""Datasets, registered by name (the `dataset` param), one module each.

Each module (`biased_mnist`, `cmnist`, `mnist` (plain, 10 classes), `waterbirds`, `celeba`, `in9l`, `folder`: the user's own;
`cifar10`, `svhn`, `cats_vs_dogs`: the paper's selective-classification sets) holds its reader, its views, its download
sources, its group names, its `prepare.<name>` params and what `evaluate` reports beyond group accuracies, in one
`DatasetSpec` (`masktune.datasets.spec`), found by its `SPEC`. Adding a dataset: its module and, in params.yaml, its
`prepare.<name>` section and its recipe.

Stages after `prepare` need not import this package: `prepare` writes what they need to know of the dataset into the
prepared file (`DatasetSpec.file_attributes`), and they read it there (`masktune.data.prepared.open_prepared`),
so that editing one dataset's module reruns no other dataset's later stages.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from masktune.config.params import load_config
from masktune.datasets.spec import DatasetSpec, PrepareConfig
from masktune.errors import UserError

DISCOVERS = ("masktune.datasets",)  # every module of the package is imported by name (scripts/dvc_deps.py)


def _discover() -> dict[str, DatasetSpec]:
    """{name: spec} of every module of this package with a `SPEC` (the shared readers have none), in name
    order: adding a dataset is its module (and its params and recipe in params.yaml), no list to edit."""
    found = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        spec = getattr(importlib.import_module(f"{__name__}.{module}"), "SPEC", None)
        if isinstance(spec, DatasetSpec):
            found[spec.name] = spec
    return found


DATASETS: dict[str, DatasetSpec] = _discover()


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"params.yaml: dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name]


def load_prepare_config(params_file: str | Path = "params.yaml", dvc_file: str | Path = "dvc.yaml") -> PrepareConfig:
    """Stage `prepare`'s config, its dataset's `prepare.<name>` keys checked by that dataset's `params`."""
    return load_config(PrepareConfig, "prepare", params_file, dvc_file,
                       sections={"options": lambda key: get_dataset(key.removeprefix("prepare.")).params})
