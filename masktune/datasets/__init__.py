"""Datasets, looked up by the `dataset` param (one entry per dataset, as in DomainBed).

Each entry reads its own `prepare.*` params and returns its splits (`train`, `val` and its test
splits): biased MNIST as pixel arrays (`SampleSet`), the image-folder datasets (Waterbirds, CelebA,
IN-9L) as lists of files (`ImageRecords`) that `prepare` copies, encoded, into the one HDF5 file
(masktune/image_store.py says why). `group_names` map group id = 2 * spurious attribute + label to a
name; `metrics` says what `evaluate` reports beyond the group accuracies.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from masktune.datasets import celeba, in9l, waterbirds
from masktune.datasets.biased_mnist import GROUP_NAMES as MNIST_GROUP_NAMES
from masktune.datasets.biased_mnist import build_biased_mnist
from masktune.datasets.mnist_idx import load_mnist
from masktune.datasets.records import ImageRecords
from masktune.errors import UserError
from masktune.params import StageParams
from masktune.storage import SampleSet

IN9L_TEST_VARIANTS = ("original", "mixed_same", "mixed_rand", "only_fg")  # the paper's Table 3 columns


@dataclass(frozen=True)
class DatasetSpec:
    num_classes: int
    group_names: Callable[[StageParams], dict[int, str]]
    test_splits: tuple[str, ...]
    prepare: Callable[[StageParams], dict[str, SampleSet] | dict[str, ImageRecords]]
    image_folder: bool = False     # stored encoded, read through masktune.views' transforms
    metrics: str = "groups"        # "groups" | "background_challenge" (IN-9L: BG-gap as well)


def _prepare_biased_mnist(p: StageParams) -> dict[str, SampleSet]:
    kwargs = {
        "conflicting_ratio": p.number("prepare.bias_conflicting_ratio", 0.0, 1.0),
        "square_size": p.integer("prepare.square_size", 1, 28),
        "color": tuple(p.int_list("prepare.square_color", 3, 0, 255)),
        "placement": p.choice("prepare.square_placement", ["official", "random"]),
        "val_size": p.integer("prepare.val_size", 1),
        "seed": p.integer("prepare.seed", 0),
        "train_limit": p.integer("prepare.train_limit", 2, optional=True),
        "test_limit": p.integer("prepare.test_limit", 1, optional=True),
    }
    return build_biased_mnist(load_mnist(p.optional_path("prepare.mnist_dir")), **kwargs)


def _dataset_folder(p: StageParams, name: str, marker: str | tuple[str, ...]) -> Path:
    """`prepare.<name>.dir`, or the official copy downloaded into `download_dir` when `download`."""
    from masktune.download import SOURCES, resolve_dataset_folder

    cache = p.optional_path("download_dir") or Path.home() / ".cache" / "masktune"
    return resolve_dataset_folder(p.optional_path(f"prepare.{name}.dir"), p.boolean("download"), SOURCES[name],
                                  cache / name, marker)


def _limited(splits: dict[str, ImageRecords], p: StageParams) -> dict[str, ImageRecords]:
    """The first `prepare.limit` images of each split (quick runs and tests), or all."""
    limit = p.integer("prepare.limit", 1, optional=True)
    if limit is None:
        return splits
    return {name: records.subset(range(min(limit, len(records)))) for name, records in splits.items()}


def _prepare_waterbirds(p: StageParams) -> dict[str, ImageRecords]:
    return _limited(waterbirds.read_waterbirds(_dataset_folder(p, "waterbirds", "metadata.csv")), p)


def _celeba_attributes(p: StageParams) -> tuple[str, str]:
    return p.choice("prepare.celeba.target", celeba.ATTRIBUTE_NAMES), \
        p.choice("prepare.celeba.spurious", celeba.ATTRIBUTE_NAMES)


def _prepare_celeba(p: StageParams) -> dict[str, ImageRecords]:
    target, spurious = _celeba_attributes(p)
    if target == spurious:
        raise UserError(f"params.yaml: prepare.celeba.target and prepare.celeba.spurious are both {target!r}")
    root = _dataset_folder(p, "celeba", celeba.IMAGE_FOLDER)
    return _limited(celeba.read_celeba(root, target, spurious), p)


def _prepare_in9l(p: StageParams) -> dict[str, ImageRecords]:
    """`prepare.in9l.dir` holds `in9l/` (train, val) and `bg_challenge/` (the test variants), as the
    two official archives unpack."""
    root = _dataset_folder(p, "in9l", ("in9l/train", "bg_challenge/original/val"))
    return _limited(in9l.read_in9l(root / "in9l", root / "bg_challenge", variants=IN9L_TEST_VARIANTS), p)


DATASETS: dict[str, DatasetSpec] = {
    "biased_mnist": DatasetSpec(2, lambda p: MNIST_GROUP_NAMES, ("test_original", "test_biased"),
                                _prepare_biased_mnist),
    "waterbirds": DatasetSpec(waterbirds.NUM_CLASSES, lambda p: waterbirds.GROUP_NAMES, ("test",),
                              _prepare_waterbirds, image_folder=True),
    "celeba": DatasetSpec(celeba.NUM_CLASSES, lambda p: celeba.group_names(*_celeba_attributes(p)), ("test",),
                          _prepare_celeba, image_folder=True),
    "in9l": DatasetSpec(in9l.NUM_CLASSES, lambda p: in9l.GROUP_NAMES,
                        tuple(f"test_{variant}" for variant in IN9L_TEST_VARIANTS), _prepare_in9l,
                        image_folder=True, metrics="background_challenge"),
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"params.yaml: dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name]
