"""One interface over the two kinds of prepared splits, for training, prediction and saliency.

- `ArraySplit`: pixel arrays small enough to hold in memory (biased MNIST, 28 x 28): batches are
  index slices turned into tensors on the device, as before (same shuffling, same numbers).
- `ImageSplit`: image-folder datasets stored as encoded files (`image_store`): a DataLoader decodes
  and transforms them in worker processes with the official torchvision transforms, applying the
  MaskTune masks to the raw image first when given, as the official masked PNG files have them.

Both yield `(inputs on the device, row indices)`; shuffled when a generator is given. With a
generator, an `ImageSplit` is deterministic for a given number of workers: the DataLoader draws its
workers' seeds from the generator, and each random transform draws from its worker's seed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from masktune import views
from masktune.image_store import EncodedImages, has_encoded_images
from masktune.masking import apply_masks, unpack_masks
from masktune.storage import dataset_shape, open_h5, read_attrs, read_rows, read_split
from masktune.streaming import read_vectors, stream_images
from masktune.training import batches, to_input


class ArraySplit:
    """uint8 images (N, H, W, C) in memory (or a `MaskedImages` view of them) with their labels."""

    def __init__(self, images, labels: np.ndarray, groups: np.ndarray):
        self.images, self.labels, self.groups = images, labels, groups

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None,
                device: torch.device) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        for index in batches(len(self), batch_size, generator):
            yield to_input(self.images[index], device), index


class RawMasks:
    """Per-image MaskTune masks of a train split, read one row at a time from the masks file and
    mapped from the masking view back to each raw image (`views.mask_to_raw`)."""

    def __init__(self, path: str | Path, view_size: tuple[int, int], geometry, alignment: str):
        self.path, self.view_size, self.geometry, self.alignment = Path(path), view_size, geometry, alignment
        self._file = None

    def __call__(self, i: int, height: int, width: int) -> np.ndarray:
        if self._file is None:
            self._file = open_h5(self.path)
        view_mask = unpack_masks(self._file["masks"][i:i + 1], *self.view_size)[0]
        return views.mask_to_raw(view_mask, height, width, self.geometry, self.alignment)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}


class _TransformedImages(Dataset):
    def __init__(self, images: EncodedImages, transform: Callable, masks: RawMasks | None):
        self.images, self.transform, self.masks = images, transform, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        if self.masks is not None:
            pixels = np.asarray(image)
            mask = self.masks(i, *pixels.shape[:2])
            image = Image.fromarray(apply_masks(pixels[None], mask[None])[0])
        return self.transform(image), i


class ImageSplit:
    """An image-folder split: decoded, (masked,) transformed in `workers` DataLoader processes."""

    def __init__(self, path: str | Path, split: str, transform: Callable, labels: np.ndarray,
                 groups: np.ndarray, workers: int, masks: RawMasks | None = None):
        self.dataset = _TransformedImages(EncodedImages(path, split), transform, masks)
        self.labels, self.groups, self.workers = labels, groups, workers

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None,
                device: torch.device) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=generator is not None,
                            generator=generator, num_workers=self.workers, pin_memory=device.type == "cuda")
        for inputs, index in loader:
            yield inputs.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last), index.numpy()


TRANSFORMS = ("train", "eval", "masking")


def load_split(path: str | Path, split: str, transform: str, workers: int = 0, masks: RawMasks | None = None,
               packed_masks: np.ndarray | None = None):
    """A split of the prepared file as an `ArraySplit` (pixel arrays) or an `ImageSplit` (encoded
    images, through the dataset's official `transform`: train | eval | masking). Masks: `packed_masks`
    (arrays, applied as batches are read) or `masks` (encoded images, mapped to each raw image)."""
    if not has_encoded_images(path, split):
        samples = read_split(path, split)
        images = samples.images
        if packed_masks is not None:
            from masktune.mask_store import MaskedImages

            images = MaskedImages(images, packed_masks)
        return ArraySplit(images, samples.labels, samples.groups)
    dataset = str(read_attrs(path)["dataset"])
    build = {"train": views.train_transform, "eval": views.eval_transform, "masking": views.masking_transform}
    labels, groups = read_vectors(path, split, "labels", "groups")
    return ImageSplit(path, split, build[transform](dataset), labels, groups, workers, masks)


def masking_view_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the images the saliency and the masks are computed on: the stored images
    (pixel arrays), or the dataset's masking view (encoded images)."""
    if not has_encoded_images(path, "train"):
        return tuple(dataset_shape(path, "train/images", 4)[1:3])
    with open_h5(path) as f:
        height, width = (int(s) for s in f["train/image_sizes"][0])
    return views.dataset_views(str(read_attrs(path)["dataset"])).masking.output_size(height, width)


def raw_masks(path: str | Path, masks_path: str | Path, alignment: str) -> RawMasks:
    """The masks of an encoded train split, mapped to the raw images through the masking view."""
    geometry = views.dataset_views(str(read_attrs(path)["dataset"])).masking
    return RawMasks(masks_path, masking_view_size(path), geometry, alignment)


def saliency_batches(path: str | Path, start: int, batch_size: int, workers: int,
                     device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, model inputs on the device) of the train split from row `start`, in order, as the
    saliency sees them: the stored images (ToTensor) or the dataset's masking view."""
    if not has_encoded_images(path, "train"):
        for first, images in stream_images(path, "train", batch_size, start, workers,
                                           pin_memory=device.type == "cuda"):
            yield first, to_input(images, device)
        return
    split = load_split(path, "train", "masking", workers)
    rows = torch.utils.data.Subset(split.dataset, range(start, len(split)))
    loader = DataLoader(rows, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    for inputs, index in loader:
        yield int(index[0]), inputs.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def masking_view_images(path: str | Path, rows: np.ndarray) -> np.ndarray:
    """uint8 (k, H, W, 3) training images `rows` as the saliency saw them (for the mask figure):
    the stored images, or the masking view's geometry applied to the raw images (not normalised)."""
    if not has_encoded_images(path, "train"):
        return read_rows(path, "train/images", rows)
    from torchvision.transforms import Compose  # torchvision only for image-folder datasets

    geometry = Compose(views.dataset_views(str(read_attrs(path)["dataset"])).masking.transforms())
    images = EncodedImages(path, "train")
    return np.stack([np.asarray(geometry(images[int(i)])) for i in rows])
