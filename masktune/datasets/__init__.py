"""Datasets, looked up by the `dataset` param (one entry per dataset, as in DomainBed).

Each entry reads its own `prepare.*` params and returns the splits `train`, `val` and its test
splits as `SampleSet`s; `prepare` writes them to one HDF5 file.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from masktune.datasets.biased_mnist import GROUP_NAMES as MNIST_GROUP_NAMES
from masktune.datasets.biased_mnist import build_biased_mnist
from masktune.datasets.mnist_idx import load_mnist
from masktune.errors import UserError
from masktune.params import StageParams
from masktune.storage import SampleSet


@dataclass(frozen=True)
class DatasetSpec:
    num_classes: int
    group_names: dict[int, str]
    test_splits: tuple[str, ...]
    prepare: Callable[[StageParams], dict[str, SampleSet]]


def _prepare_biased_mnist(p: StageParams) -> dict[str, SampleSet]:
    kwargs = dict(
        conflicting_ratio=p.number("prepare.bias_conflicting_ratio", 0.0, 1.0),
        square_size=p.integer("prepare.square_size", 1, 28),
        color=tuple(p.int_list("prepare.square_color", 3, 0, 255)),
        placement=p.choice("prepare.square_placement", ["official", "random"]),
        val_size=p.integer("prepare.val_size", 1),
        seed=p.integer("prepare.seed", 0),
        train_limit=p.integer("prepare.train_limit", 2, optional=True),
        test_limit=p.integer("prepare.test_limit", 1, optional=True),
    )
    return build_biased_mnist(load_mnist(p.optional_path("prepare.mnist_dir")), **kwargs)


DATASETS: dict[str, DatasetSpec] = {
    "biased_mnist": DatasetSpec(2, MNIST_GROUP_NAMES, ("test_original", "test_biased"),
                                _prepare_biased_mnist),
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"params.yaml: dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name]
