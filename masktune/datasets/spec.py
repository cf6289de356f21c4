"""What a dataset is to the pipeline: one `DatasetSpec`, defined in the dataset's own module and
registered by name in `masktune.datasets.DATASETS` (as DomainBed's and SpuCo's registries).

A spec holds everything the stages need to know about a dataset: how `prepare` builds its splits from
the validated `prepare.<name>` params, its group names, its test splits, how its images are viewed
(`views`: the masking, evaluation and train transforms; `views.PLAIN` for small pixel datasets), where
its official copy is downloaded from, and what `evaluate` reports beyond the group accuracies. `prepare`
records all that later stages need of it in the prepared file (`file_attributes`), where they read it
(`masktune.data.prepared.DatasetInfo`).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from masktune.config.fields import Bool, Field, FilePath
from masktune.config.params import DATASET, param, section
from masktune.data.prepared import METRICS
from masktune.data.samples import ImageRecords, SampleSet
from masktune.data.views import DatasetViews
from masktune.datasets.download import Source, resolve_dataset_folder
from masktune.errors import UserError


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """Stage `prepare`: the dataset, its own params (`prepare.<name>`, checked by its `DatasetSpec.params`) and
    where downloads go."""
    dataset: str = param("dataset", DATASET)
    options: MappingProxyType = section("prepare.${dataset}")  # the dataset's PARAMS, given at load time
    download: bool = param("download", Bool())
    download_dir: Path | None = param("download_dir", FilePath(nullable=True))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    params: Mapping[str, Field]                         # its `prepare.<name>` keys and their fields
    num_classes: int
    group_names: Callable[[Mapping], dict[int, str]]    # prepare.<name> options -> {group id: name}
    test_splits: tuple[str, ...]
    prepare: Callable[[PrepareConfig], Mapping[str, SampleSet | ImageRecords]]
    views: DatasetViews
    sources: tuple[Source, ...] = ()                    # official copies, for `download: true`
    metrics: str = "groups"                             # "background_challenge": IN-9L's BG-gap as well
    # The accuracy the dataset's literature reports as "average", a key of eval.metrics.group_metrics:
    # plain accuracy (MaskTune's papers), or on Waterbirds the train-weighted group average (DFR, JTT).
    average: str = "accuracy"
    class_names: tuple[str, ...] = ()                   # empty: "0", "1", ...
    # False where no spurious attribute is known (a folder without one): the groups are the classes, and
    # `evaluate` reports per-class accuracy, the worst class and the mean class accuracy under those names.
    groups_known: bool = True
    # Datasets defined by their data (the `folder` dataset): what `prepare` records of them beside the
    # splits (prepare config -> file attributes, overriding the spec's own: classes, test splits, views).
    describe: Callable[[PrepareConfig], dict] | None = None

    def __post_init__(self):
        if self.metrics not in METRICS:
            raise ValueError(f"metrics must be one of {METRICS}, got {self.metrics!r}")

    def file_attributes(self, config: PrepareConfig) -> dict:
        """The attributes `prepare` writes into the prepared file: all that later stages know of the
        dataset (masktune.data.prepared.DatasetInfo), so that none of them imports this package."""
        attrs = {"num_classes": self.num_classes, "groups_known": self.groups_known,
                 "class_names": json.dumps(self.class_names or [str(c) for c in range(self.num_classes)]),
                 "group_names": json.dumps(self.group_names(config.options)),
                 "test_splits": json.dumps(list(self.test_splits)), "average": self.average,
                 "metrics": self.metrics, "views": self.views.to_json()}
        if self.describe is not None:
            attrs.update(self.describe(config))
        return {"dataset": self.name, **attrs}


def download_location(config: PrepareConfig, name: str) -> Path:
    """Where downloads of `name` go: `download_dir/<name>` (null: ~/.cache/masktune/<name>)."""
    return (config.download_dir or Path.home() / ".cache" / "masktune") / name


def dataset_folder(config: PrepareConfig, sources: Sequence[Source], marker: str | Sequence[str]) -> Path:
    """`prepare.<dataset>.dir`, or the official copy downloaded into `download_dir/<dataset>` when
    `download` is true (masktune/datasets/download.py)."""
    return resolve_dataset_folder(config.options["dir"], config.download, sources,
                                  download_location(config, config.dataset), marker)


def first_images(splits: Mapping[str, ImageRecords], config: PrepareConfig) -> dict[str, ImageRecords]:
    """At most `prepare.<dataset>.limit` images of each split (quick runs and tests), taken in turns from
    each class (`per_class_turns`), or all. The first N images of a file sorted by class (an ImageFolder
    tree, IN-9L) would be one class in training and several in val and test."""
    limit = config.options["limit"]
    if limit is None:
        return dict(splits)
    return {name: records.subset(per_class_turns(records.labels, limit, f"prepare.{config.dataset}.limit", name))
            for name, records in splits.items()}


def per_class_turns(labels: Sequence | np.ndarray, limit: int, param: str, split: str) -> np.ndarray:
    """The positions of at most `limit` of a split's images (`labels`: one class code per image, the classes in
    the codes' sorted order), taken in turns: the first image of every class, then the second of every class,
    ..., a class that runs out leaving its turns to the others; each class keeps its own order, and the positions
    come back in the split's order. Every class keeps at least one image, so a limit below the split's number
    of classes (`param`, named in the message) is refused rather than dropping classes without a word."""
    codes = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)
    classes = int(codes.max()) + 1 if len(codes) else 0
    if limit < classes:
        raise UserError(f"params.yaml: {param} is {limit}, fewer than the {classes} classes of split {split!r}: "
                        f"every class needs an image; set it to at least {classes} (or null: every image)")
    by_class = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=classes)
    turn = np.empty(len(codes), dtype=np.int64)
    turn[by_class] = np.arange(len(codes)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.sort(np.lexsort((codes, turn))[:limit])
