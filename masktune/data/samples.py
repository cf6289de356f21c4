"""A split in memory, as a dataset builder hands it to `prepare`: pixels (`SampleSet`) or image files
(`ImageRecords`). Both carry the per-sample vectors every prepared split has: labels, the spurious
attribute, group = attribute * num_classes + label (the Waterbirds convention 2 * place + y for two
classes; the class itself where there is no attribute) and the source index."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class SampleSet:
    """One split in memory: uint8 images (N, H, W, C) and their per-sample vectors. `files`: the image
    files the pixels are a resized view of (a folder read with `transforms: resize`), kept so that MaskTune
    masks each file as stored, as the official code does (masktune.data.splits.RemaskedViewSplit)."""

    images: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray
    source_index: np.ndarray
    num_classes: int = 2
    files: ImageRecords | None = None

    @property
    def groups(self) -> np.ndarray:
        """Group id = spurious attribute * num_classes + label (two classes: Waterbirds' 2 * place + y)."""
        return group_ids(self.labels, self.attributes, self.num_classes)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> SampleSet:
        return SampleSet(self.images[index], self.labels[index], self.attributes[index],
                         self.source_index[index], self.num_classes,
                         None if self.files is None else self.files.subset(index))


def group_ids(labels: np.ndarray, attributes: np.ndarray, num_classes: int) -> np.ndarray:
    """Group id of each sample: attribute * num_classes + label, so each (label, attribute) pair has its
    own id; for two classes this is Waterbirds' 2 * place + y, and without an attribute (all 0) the class."""
    return np.asarray(attributes) * num_classes + np.asarray(labels)


def _frozen_int64(values) -> np.ndarray:
    array = np.array(values, dtype=np.int64).reshape(-1)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ImageRecords:
    """One split of an image-folder dataset: paths relative to `root`, labels and spurious attribute.

    `attributes` is the spurious attribute (Waterbirds: place, CelebA: the `spurious` attribute,
    Male by default; IN-9L: 0, there is none); group = attribute * num_classes + label. `source_index` is each
    image's 0-based data row in the metadata file (IN-9L: its position in the sorted folder
    listing); it defaults to 0..N-1.
    """

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    attributes: np.ndarray
    source_index: np.ndarray = field(default=None)  # type: ignore[assignment]
    num_classes: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        n = len(self.paths)
        source = np.arange(n) if self.source_index is None else self.source_index
        for name, values in (("labels", self.labels), ("attributes", self.attributes), ("source_index", source)):
            array = _frozen_int64(values)
            if len(array) != n:
                raise ValueError(f"ImageRecords: {name} has {len(array)} entries for {n} paths")
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return len(self.paths)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageRecords):
            return NotImplemented
        return (self.root == other.root and self.paths == other.paths and self.num_classes == other.num_classes
                and all(np.array_equal(getattr(self, f), getattr(other, f))
                        for f in ("labels", "attributes", "source_index")))

    __hash__ = None  # type: ignore[assignment]  # holds arrays, like numpy

    @property
    def groups(self) -> np.ndarray:
        """Group id = spurious attribute * num_classes + label (two classes: Waterbirds' 2 * place + y)."""
        return group_ids(self.labels, self.attributes, self.num_classes)

    def path(self, index: int) -> Path:
        """Absolute path of image `index`."""
        return self.root / self.paths[index]

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageRecords:
        """The records at `index`, in that order (e.g. a limit for quick runs)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return ImageRecords(self.root, tuple(self.paths[i] for i in index), self.labels[index],
                            self.attributes[index], self.source_index[index], self.num_classes)


