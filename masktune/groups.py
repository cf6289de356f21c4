"""The one contract between group inference and robust training: a groups file.

Every group-inference method (masktune/group_inference/: the true groups, the classes, JTT's error set,
ExMap's clusters, ClusterFix's clusters) writes one HDF5 file, `data/groups/<name>.h5`, with a group id
for every row of the train and the val split, and every robust trainer (masktune/robust_train/,
masktune/last_layer/) reads any such file: a new inference method works with every trainer, and a
new trainer with every inference method (the shape of SpuCo's `group_inference/` ->
`GroupLabeledDatasetWrapper` -> `robust_train/`).

The file holds:
- `train`, `val`: int64 group ids, one per row of the prepared split, in row order;
- attributes: `names` (JSON list, group id -> name), `classes` (JSON list, group id -> the class all its
  rows have: groups refine the classes, which every trainer here relies on), `minority` (JSON list of the
  group ids the method itself names as the minority, JTT's error groups, which `upsample` appends λ_up
  times; empty for a partition that names none, the clusters and the true groups, which `upsample`
  balances instead), `inference` (the method's name), `description` (how the ids
  were inferred, one line), `uses_group_labels` (whether the true group labels were read to infer them:
  the ✓ of the report).

Ids are 0 .. len(names) - 1; a group may be empty in one split (a cluster found on val only).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masktune.errors import UserError
from masktune.io.hdf5 import read_arrays, read_attrs, write_arrays

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Groups:
    """Group ids of the train and val rows, and what they mean."""
    train: np.ndarray
    val: np.ndarray
    names: tuple[str, ...]
    classes: tuple[int, ...]
    minority: tuple[int, ...]
    inference: str
    description: str
    uses_group_labels: bool
    title: str = ""  # the report's name of these groups ("JTT's error set"), from the spec that wrote them

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", self.inference)

    @property
    def count(self) -> int:
        return len(self.names)

    def of(self, split: str) -> np.ndarray:
        return {"train": self.train, "val": self.val}[split]

    def within_class(self) -> np.ndarray:
        """Per group id, its rank among the groups of its class (ClusterFix's pseudo-label targets:
        cluster j of class c is c * k + j, rank j)."""
        ranks = np.zeros(self.count, dtype=np.int64)
        for c in set(self.classes):
            members = [g for g in range(self.count) if self.classes[g] == c]
            ranks[members] = np.arange(len(members))
        return ranks

    def sizes(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.of(split), minlength=self.count)


def make_groups(ids: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], names: Sequence[str],
                classes: Sequence[int], *, inference: str, description: str, uses_group_labels: bool,
                minority: Sequence[int] | None = None, title: str = "") -> Groups:
    """A `Groups`, checked: ids in range, every group within one class. `minority`: the groups the
    method names as its minority (JTT's errors); none by default."""
    train, val = (np.asarray(ids[split], dtype=np.int64) for split in SPLITS)
    classes = tuple(int(c) for c in classes)
    if len(names) != len(classes):
        raise ValueError(f"{len(names)} group names for {len(classes)} group classes")
    for split, split_ids in (("train", train), ("val", val)):
        if len(split_ids) != len(labels[split]):
            raise ValueError(f"{len(split_ids)} {split} group ids for {len(labels[split])} rows")
        if len(split_ids) and (split_ids.min() < 0 or split_ids.max() >= len(names)):
            raise ValueError(f"{split} group ids must be in 0..{len(names) - 1}")
        wrong = np.asarray(classes)[split_ids] != np.asarray(labels[split])
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise ValueError(f"{split} row {row} is in group {names[split_ids[row]]!r} of class "
                             f"{classes[split_ids[row]]}, but its label is {labels[split][row]}")
    return Groups(train, val, tuple(names), classes, tuple(int(g) for g in minority or ()), inference, description,
                  bool(uses_group_labels), title)


def write_groups(path: str | Path, groups: Groups, attrs: Mapping | None = None) -> None:
    """The groups file, atomically."""
    write_arrays(path, {"train": groups.train, "val": groups.val},
                 {"names": json.dumps(list(groups.names)), "classes": json.dumps(list(groups.classes)),
                  "minority": json.dumps(list(groups.minority)), "inference": groups.inference,
                  "description": groups.description, "uses_group_labels": groups.uses_group_labels,
                  "title": groups.title, **(attrs or {})})


def read_groups(path: str | Path, rows: Mapping[str, int]) -> Groups:
    """The groups file at `path`, for splits of `rows` = {"train": N, "val": M} rows (a file written for
    other data is refused in one line)."""
    attrs = read_attrs(path)
    missing = [k for k in ("names", "classes", "minority", "inference") if k not in attrs]
    if missing:
        raise UserError(f"{path}: not a groups file (no {', '.join(missing)}): rerun `dvc repro`")
    arrays = read_arrays(path, {split: (rows[split],) for split in SPLITS})
    names, classes = json.loads(str(attrs["names"])), json.loads(str(attrs["classes"]))
    for split in SPLITS:
        ids = arrays[split]
        if len(ids) and (ids.min() < 0 or ids.max() >= len(names)):
            raise UserError(f"{path}: {split} group ids outside 0..{len(names) - 1}")
    return Groups(arrays["train"].astype(np.int64), arrays["val"].astype(np.int64), tuple(names),
                  tuple(int(c) for c in classes), tuple(int(g) for g in json.loads(str(attrs["minority"]))),
                  str(attrs["inference"]), str(attrs.get("description", "")), bool(attrs.get("uses_group_labels")),
                  str(attrs.get("title", "")))
