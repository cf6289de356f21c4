"""Datasets, registered by name (the `dataset` param), one module each.

Each module (`biased_mnist`, `cmnist`, `mnist` (plain, 10 classes), `waterbirds`, `celeba`, `in9l`, `folder`: the user's own;
`cifar10`, `svhn`, `cats_vs_dogs`: the paper's selective-classification sets) holds its reader, its views, its download
sources, its group names and what `evaluate` reports beyond group accuracies, in one `DatasetSpec`
(`masktune.datasets.spec`). Adding a dataset: a module with a `SPEC`, one line below, its name in
`masktune.config.schema.DATASET_NAMES` (with its `prepare.<name>` params) and its recipe in params.yaml.

Stages after `prepare` need not import this package: `prepare` writes what they need to know of the dataset into the
prepared file (`DatasetSpec.file_attributes`), and they read it there (`masktune.data.prepared.open_prepared`),
so that editing one dataset's module reruns no other dataset's later stages.
"""
from __future__ import annotations

from masktune.datasets import biased_mnist, cats_vs_dogs, celeba, cifar10, cmnist, folder, in9l, mnist, svhn, waterbirds
from masktune.datasets.spec import DatasetSpec
from masktune.errors import UserError

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (biased_mnist.SPEC, waterbirds.SPEC, celeba.SPEC,
                                                                in9l.SPEC, cmnist.SPEC, folder.SPEC, mnist.SPEC,
                                                                # the paper's selective classification
                                                                cifar10.SPEC, svhn.SPEC, cats_vs_dogs.SPEC)}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"params.yaml: dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name]
