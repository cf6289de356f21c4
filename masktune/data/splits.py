"""The one data contract: every prepared split is read as a `Split`, whatever its storage.

A `Split` is a torch `Dataset` of `(image tensor, label, group, index)` with the split's `labels`,
`groups` and `attributes` as arrays, and two batched readers, so that training, prediction and the
per-image passes (saliency) never ask how a split is stored:

- `batches(batch_size, device, generator, world)`: `(inputs on the device, row indices)`, shuffled when
  a generator is given (training), in order without (prediction); with a data-parallel `world`, this
  rank's part of each global batch (masktune.distributed);
- `ordered_batches(batch_size, device, start, workers)`: `(first row, inputs)` in row order from row
  `start`, in memory bounded by the batch (saliency streams CelebA's 162,770 images this way).

Two storages implement it (`masktune.data.prepared` says why there are two):
- `PixelSplit`: small pixel arrays (biased MNIST, 28 x 28) in memory, the fast path: a batch is an
  index slice turned into a tensor on the device (`to_input`, torchvision's `ToTensor`, batched);
- `EncodedSplit`: image files decoded and transformed in DataLoader worker processes with the dataset's
  torchvision transforms. With a generator it is deterministic for a given number of workers: the
  DataLoader draws its workers' seeds from the generator, and each random transform draws from its
  worker's seed.

Masks are applied in one place, `MaskSource.apply` (masktune.data.masks), to the raw pixels before
the transform, as the official code's masked PNG files have them.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from masktune.data.masks import MaskSource
from masktune.data.prepared import EncodedImages, PreparedFile
from masktune.data.samples import SampleSet
from masktune.data.views import DatasetViews
from masktune.distributed import World, shard_batch
from masktune.errors import UserError
from masktune.io.files import file_size_limit
from masktune.io.hdf5 import STREAM_CACHE_BYTES, open_h5


def to_input(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1]: torchvision's ToTensor, batched. The
    result keeps the NHWC layout in memory (a channels-last tensor), which oneDNN and cuDNN convolve
    fastest; values are the same either way."""
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()  # page-locked: the copy to the GPU runs asynchronously
    tensor = tensor.to(device, non_blocking=True)
    return tensor.permute(0, 3, 1, 2).float().div_(255)


def index_batches(n: int, batch_size: int, generator: torch.Generator | None = None,
                  world: World | None = None) -> Iterator[np.ndarray]:
    """Index batches over n samples: shuffled with `generator`, in order without one. With a
    data-parallel `world`, this rank's part of each batch (every rank draws the same permutation); a
    rank whose part is empty (a last batch of fewer rows than ranks) gets the whole batch as a
    stand-in that `train_epoch` weighs 0."""
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    for start in range(0, n, batch_size):
        batch = order[start:start + batch_size]
        if world is not None and world.distributed:
            part = shard_batch(batch, world)
            batch = part if len(part) else batch
        yield batch


class ShardedBatches:
    """A DataLoader batch sampler yielding `index_batches` (this rank's part of each shuffled batch),
    the permutation drawn from `generator` when iteration starts, as DataLoader's own sampler does."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, world: World):
        self.n, self.batch_size, self.generator, self.world = n, batch_size, generator, world

    def __iter__(self) -> Iterator[list[int]]:
        return (batch.tolist() for batch in index_batches(self.n, self.batch_size, self.generator, self.world))

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


class PixelBatches(Dataset):
    """Item i = (first row, uint8 images (B, H, W, C)) of contiguous batch i of a pixel split, from row
    `start` on: a DataLoader over it reads batch i+1 (decompression included) in a worker process while
    the model computes batch i, in memory bounded by the batch, not by N. Each worker opens its own
    HDF5 handle (h5py handles do not survive a fork)."""

    def __init__(self, path: str | Path, split: str, batch_size: int, start: int = 0):
        self.path, self.key, self.batch_size, self.start = Path(path), f"{split}/images", batch_size, start
        with open_h5(self.path) as f:
            if self.key not in f:
                raise UserError(f"{self.path}: no dataset '{self.key}'")
            self.n = f[self.key].shape[0]
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return math.ceil(max(0, self.n - self.start) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        if self._file is None:
            self._file = open_h5(self.path, STREAM_CACHE_BYTES)
        first = self.start + i * self.batch_size
        return first, torch.from_numpy(self._file[self.key][first:min(first + self.batch_size, self.n)])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}


class Split(Dataset):
    """A prepared split: per-sample arrays, items `(image, label, group, index)`, batched readers."""

    labels: np.ndarray
    groups: np.ndarray
    attributes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, int]:
        raise NotImplementedError

    def batches(self, batch_size: int, device: torch.device, generator: torch.Generator | None = None,
                world: World | None = None) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        raise NotImplementedError

    def ordered_batches(self, batch_size: int, device: torch.device, start: int = 0,
                        workers: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        raise NotImplementedError

    def source_rows(self, index: np.ndarray) -> np.ndarray:
        """The rows of the prepared split behind the items `index` (themselves, but for a resampled split)."""
        return index


class PixelSplit(Split):
    """uint8 pixel arrays (N, H, W, C), read whole on first use (training, prediction) or streamed
    from the file in contiguous batches (`ordered_batches`)."""

    def __init__(self, prepared: PreparedFile, split: str, masks: MaskSource | None = None):
        self.prepared, self.split, self.masks = prepared, split, masks
        self.labels, self.groups, self.attributes = prepared.vectors(split, "labels", "groups", "attributes")
        self._images: np.ndarray | None = None

    @classmethod
    def from_samples(cls, samples: SampleSet, masks: MaskSource | None = None) -> PixelSplit:
        """A split of pixels already in memory (tests, benchmarks, a dataset built on the fly)."""
        split = cls.__new__(cls)
        split.prepared, split.split, split.masks = None, None, masks
        split.labels, split.groups, split.attributes = samples.labels, samples.groups, samples.attributes
        split._images = samples.images
        return split

    def pixels(self, index: np.ndarray) -> np.ndarray:
        """uint8 images of the rows `index`, masked when the split has masks."""
        if self._images is None:
            self._images = self.prepared.pixels(self.split)
        images = self._images[index]
        return images if self.masks is None else self.masks.apply(images, index)

    def __getitem__(self, i: int):
        image = to_input(self.pixels(np.array([i])), torch.device("cpu"))[0]
        return image, int(self.labels[i]), int(self.groups[i]), i

    def batches(self, batch_size, device, generator=None, world=None):
        for index in index_batches(len(self), batch_size, generator, world):
            yield to_input(self.pixels(index), device), index

    def ordered_batches(self, batch_size, device, start=0, workers=0):
        if self.masks is not None:
            raise ValueError("ordered_batches streams unmasked images")
        if self.prepared is None:
            for first in range(start, len(self), batch_size):
                yield first, to_input(self._images[first:first + batch_size], device)
            return
        batches = PixelBatches(self.prepared.path, self.split, batch_size, start)
        loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=loader_workers(workers),
                            pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None)
        try:
            for first, images in loader:
                yield first, to_input(images, device)
        finally:
            batches.close()


class RemaskedViewSplit(PixelSplit):
    """The masked training split of a folder stored as a resized view (`transforms: resize`), masked as the
    official code masks (aliasgharkhani/Masktune src/utils/data_save_load.py,
    `apply_mask_and_save_individual_image_in_png`: the view mask resized to the file's size, the file's
    pixels zeroed under it, the masked image written out; the finetune's loader then resizes it again):
    each file decoded at its own resolution, the mask put on it (`MaskSource.apply`, by `alignment`), and
    the stored view's geometry applied to the masked file. Zeroing the stored view instead leaves the
    resized edge of every masked region (and of the shortcut under it) visible, and cost MaskTune 16 points
    of worst group on a folder of 32 x 32 images read at 28 (issue 38, bench/resized_folder.py). Read in
    batches like a `PixelSplit`, so training sees the same batches in the same order."""

    def __init__(self, prepared: PreparedFile, split: str, masks: MaskSource, geometry):
        super().__init__(prepared, split, masks)
        from torchvision.transforms import Compose

        self.files, self.view = EncodedImages(prepared.path, split), Compose(geometry.transforms())

    def pixels(self, index: np.ndarray) -> np.ndarray:
        views = []
        for i in np.asarray(index).reshape(-1):
            masked = self.masks.apply(np.asarray(self.files[int(i)])[None], np.array([i]))[0]
            views.append(np.asarray(self.view(Image.fromarray(masked)), dtype=np.uint8))
        return np.stack(views)


class AugmentedPixelSplit(PixelSplit):
    """A pixel split read through a random per-image transform (the train view of CIFAR-10, SVHN, Cats vs
    Dogs: the official torchvision transforms on PIL images), masked first when it has masks, decoded in
    `workers` DataLoader processes as an `EncodedSplit`; prediction and saliency read it as a `PixelSplit`."""

    def __init__(self, prepared: PreparedFile, split: str, transform, workers: int, masks: MaskSource | None = None):
        super().__init__(prepared, split, masks)
        self.transform, self.workers = transform, workers

    def __getitem__(self, i: int):
        image = Image.fromarray(self.pixels(np.array([i]))[0])
        return self.transform(image), int(self.labels[i]), int(self.groups[i]), i

    def batches(self, batch_size, device, generator=None, world=None):
        if self._images is None:  # read the pixels once, before the workers fork: they share them
            self._images = self.prepared.pixels(self.split)
        yield from transformed_batches(self, batch_size, device, generator, self.workers, world)


class EncodedSplit(Split):
    """Image files decoded, (masked,) transformed in `workers` DataLoader processes."""

    def __init__(self, prepared: PreparedFile, split: str, transform, workers: int, masks: MaskSource | None = None):
        self.images = EncodedImages(prepared.path, split)
        self.transform, self.workers, self.masks = transform, workers, masks
        self.labels, self.groups, self.attributes = prepared.vectors(split, "labels", "groups", "attributes")

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.masks is not None:
            image = Image.fromarray(self.masks.apply(np.asarray(image)[None], np.array([i]))[0])
        return self.transform(image), int(self.labels[i]), int(self.groups[i]), i

    def _loader(self, dataset: Dataset, batch_size: int, device: torch.device, generator=None, workers=None,
                world: World | None = None):
        workers = self.workers if workers is None else workers
        yield from transformed_batches(dataset, batch_size, device, generator, workers, world)

    def batches(self, batch_size, device, generator=None, world=None):
        yield from self._loader(self, batch_size, device, generator, world=world)

    def ordered_batches(self, batch_size, device, start=0, workers=0):
        for inputs, index in self._loader(Subset(self, range(start, len(self))), batch_size, device,
                                          workers=workers):
            yield int(index[0]), inputs


def loader_workers(workers: int) -> int:
    """`workers` DataLoader processes, refused under a file size limit (`ulimit -f`): the workers hand their
    batches over in shared-memory files, which the limit caps too, and a worker that cannot write one leaves
    the stage waiting forever, with no error."""
    limit = file_size_limit()
    if workers and limit is not None:
        raise UserError(f"a file size limit is set (ulimit -f: {limit // 1024} KiB): DataLoader workers pass batches "
                        "through shared-memory files it caps too, and would hang; lift the limit or set this stage's "
                        "`workers` param to 0")
    return workers


def transformed_batches(dataset: Dataset, batch_size: int, device: torch.device, generator: torch.Generator | None,
                        workers: int, world: World | None = None):
    """(inputs on the device, row indices) of a dataset whose items are transformed one by one in `workers`
    DataLoader processes: shuffled by `generator` (this rank's part of each batch under DDP), or in order."""
    if world is not None and world.distributed and generator is not None:
        loader = DataLoader(dataset, batch_sampler=ShardedBatches(len(dataset), batch_size, generator, world),
                            generator=generator, num_workers=loader_workers(workers), pin_memory=device.type == "cuda")
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                            num_workers=loader_workers(workers), pin_memory=device.type == "cuda")
    for inputs, _, _, index in loader:
        yield inputs.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last), index.numpy()


class ResampledSplit(Split):
    """`base` read through a list of its rows, repeats allowed: one epoch is one shuffled pass over
    `rows`. JTT's upsampled training set is the train split with each error-set row listed λ_up times.
    The indices it yields are positions in `rows`, so `labels[index]` holds as for any split."""

    def __init__(self, base: Split, rows: np.ndarray):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)
        self.labels, self.groups = base.labels[self.rows], base.groups[self.rows]
        self.attributes = base.attributes[self.rows]

    def __getitem__(self, i: int):
        image, label, group, _ = self.base[int(self.rows[i])]
        return image, label, group, i

    def source_rows(self, index: np.ndarray) -> np.ndarray:
        return self.base.source_rows(self.rows[index])

    def batches(self, batch_size, device, generator=None, world=None):
        if type(self.base) is PixelSplit:  # the fast path: index the pixels in memory (not augmented)
            for index in index_batches(len(self), batch_size, generator, world):
                yield to_input(self.base.pixels(self.rows[index]), device), index
        else:
            yield from transformed_batches(self, batch_size, device, generator, self.base.workers, world)


def open_split(prepared: PreparedFile, split: str, views: DatasetViews, kind: str = "eval", workers: int = 0,
               masks: MaskSource | None = None) -> Split:
    """Split `split` of the prepared file as the model sees it through the view `kind` (train, eval,
    masking), with `masks` applied to the raw images when given. Pixel splits need views that see the pixels
    as they are (`views.PLAIN`), but for a random train transform (`AugmentedPixelSplit`)."""
    if prepared.stores_pixels(split):
        if not views.is_plain:
            raise ValueError(f"{prepared.path}: split '{split}' stores pixels, read as they are; its dataset's "
                             "views must be views.PLAIN (a train transform aside)")
        if kind == "train" and views.train is not None:
            return AugmentedPixelSplit(prepared, split, views.transform("train"), workers, masks)
        if masks is not None and prepared.stores_files(split):
            return RemaskedViewSplit(prepared, split, masks, prepared.stored_view())
        return PixelSplit(prepared, split, masks)
    return EncodedSplit(prepared, split, views.transform(kind), workers, masks)


def open_transformed_split(prepared: PreparedFile, split: str, views: DatasetViews, transform, workers: int) -> Split:
    """Split `split` through the evaluation geometry and then `transform` (a random callable on PIL images
    that returns a tensor: a self-supervised objective's views), run in `workers` DataLoader processes;
    the evaluation view itself when `transform` is None."""
    if transform is None:
        return open_split(prepared, split, views, "eval", workers)
    if prepared.stores_pixels(split):
        return AugmentedPixelSplit(prepared, split, transform, workers)
    from torchvision.transforms import Compose

    return EncodedSplit(prepared, split, Compose([*views.evaluation.transforms(), transform]), workers)


def masking_view_size(prepared: PreparedFile, views: DatasetViews) -> tuple[int, int]:
    """(height, width) of the training images as the saliency sees them: the masking view's output
    for the first raw image (its geometry gives every image of a dataset the same size)."""
    if prepared.stores_pixels("train"):
        return prepared.pixel_size("train")
    return views.masking.output_size(*prepared.first_image_size("train"))


def masking_view_images(prepared: PreparedFile, views: DatasetViews, rows: np.ndarray) -> np.ndarray:
    """uint8 (k, H, W, 3) training images `rows` as the saliency saw them (for the mask figure): the
    masking view's geometry applied to the raw images, not normalised."""
    if prepared.stores_pixels("train"):
        return prepared.pixels("train", rows)
    from torchvision.transforms import Compose

    geometry = Compose(views.masking.transforms())
    images = EncodedImages(prepared.path, "train")
    return np.stack([np.asarray(geometry(images[int(i)])) for i in rows])


def mask_source(prepared: PreparedFile, views: DatasetViews, masks_path: str | Path, alignment: str) -> MaskSource:
    """The masks file of the train split, mapped to the raw images through the masking view (for pixels kept
    beside their files, the view that made the pixels: `RemaskedViewSplit`); read whole for pixel splits
    (applied per batch), row by row for image files (in the workers)."""
    pixels = prepared.stores_pixels("train")
    geometry = prepared.stored_view() if pixels and prepared.stores_files("train") else views.masking
    return MaskSource(masks_path, prepared.length("train"), masking_view_size(prepared, views), geometry,
                      alignment, in_memory=pixels)
