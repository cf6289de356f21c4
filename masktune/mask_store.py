"""The masks file: written by `materialize_masked_dataset`, applied by `finetune` as it reads images.

Storage design (measured in bench/storage_scaling.py, numbers in the README): the stage stores
*bit-packed masks* at the stored image resolution (`masks`, uint8 (N, ceil(H*W/8)), gzip), not masked
copies of the images. A mask is one bit per pixel where a masked RGB copy is 24, and the compressed
masks are smaller still (salient regions are a few blobs), so MaskTune adds kilobytes per image on top
of the prepared data instead of duplicating it; the finetune zeroes the masked pixels as it loads each
batch, exactly as the official code's masked PNGs have them.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from masktune.errors import UserError
from masktune.masking import (
    apply_masks,
    box_masks,
    cutout_boxes,
    pack_masks,
    resize_nearest,
    saliency_masks,
    unpack_masks,
)
from masktune.saliency_store import iter_full_maps, saliency_layout
from masktune.storage import create_rows, h5_output, open_h5, read_rows

RANDOM_READ_CHUNK_BYTES = 64 << 10  # a shuffled finetune reads one mask at a time: decompress little
PIXELS_PER_CHUNK = 1 << 20  # full-resolution maps thresholded at a time (float64 intermediates: ~30 MB)


def _chunk_rows(height: int, width: int) -> int:
    return max(1, PIXELS_PER_CHUNK // (height * width))


def _write_masks(out: str | Path, rows: int, image_size: tuple[int, int], chunks: Iterator[tuple[int, np.ndarray]],
                 attrs: dict) -> np.ndarray:
    """Write (first row, bool masks) chunks packed; return each image's masked pixel fraction."""
    height, width = image_size
    fraction = np.empty(rows, dtype=np.float64)
    with h5_output(out, {**attrs, "image_size": [height, width]}) as f:
        packed = create_rows(f, "masks", rows, (-(-height * width // 8),), np.uint8, chunk_bytes=RANDOM_READ_CHUNK_BYTES)
        for first, masks in chunks:
            masks = resize_nearest(masks, height, width)
            fraction[first:first + len(masks)] = masks.reshape(len(masks), -1).mean(axis=1)
            packed[first:first + len(masks)] = pack_masks(masks)
    return fraction


def write_saliency_masks(saliency: str | Path, out: str | Path, rows: int, image_size: tuple[int, int],
                         n_std: float, attrs: dict) -> np.ndarray:
    """MaskTune: threshold each input-resolution map at mean + n_std * std of its positive values,
    resize the mask to the stored image (nearest, as the official code) and store it packed."""
    _, input_size = saliency_layout(saliency, rows)
    chunks = ((first, saliency_masks(maps, n_std))
              for first, maps in iter_full_maps(saliency, rows, _chunk_rows(*input_size)))
    return _write_masks(out, rows, image_size, chunks, attrs)


def write_random_masks(out: str | Path, rows: int, image_size: tuple[int, int], sides: tuple[int, int],
                       seed: int, attrs: dict) -> np.ndarray:
    """RandMask: one seeded Cutout square per image."""
    boxes = cutout_boxes(rows, *image_size, sides, np.random.default_rng(seed))
    step = _chunk_rows(*image_size)
    chunks = ((first, box_masks(boxes[first:first + step], *image_size)) for first in range(0, rows, step))
    return _write_masks(out, rows, image_size, chunks, attrs)


def check_masks_file(path: str | Path, rows: int, image_size: tuple[int, int]) -> None:
    """UserError unless `path` holds masks for `rows` images of `image_size` (reads no mask)."""
    with open_h5(path) as f:
        if "masks" not in f or "image_size" not in f.attrs:
            raise UserError(f"{path}: not a masks file of this project; rerun materialize_masked_dataset")
        stored = tuple(int(s) for s in f.attrs["image_size"])
        if f["masks"].shape[0] != rows or stored != tuple(image_size):
            raise UserError(f"{path}: masks for {f['masks'].shape[0]} images of {stored}, but the data has "
                            f"{rows} of {tuple(image_size)}: rerun `dvc repro`")


def read_packed_masks(path: str | Path, rows: int, image_size: tuple[int, int],
                      index: np.ndarray | None = None) -> np.ndarray:
    """The packed masks (all, or the rows `index`), checked against the images they belong to."""
    check_masks_file(path, rows, image_size)
    if index is None:
        with open_h5(path) as f:
            return f["masks"][()]
    return read_rows(path, "masks", index)


def apply_packed_masks(images: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """Zero the masked pixels (every channel) of uint8 images (B, H, W, C)."""
    return apply_masks(images, unpack_masks(packed, *images.shape[1:3]))


class MaskedImages:
    """Images that come out masked when indexed: what the finetune trains on, without storing a
    masked copy. Supports `len`, `.shape` and indexing by an index array, like the array it wraps."""

    def __init__(self, images: np.ndarray, packed_masks: np.ndarray):
        if len(images) != len(packed_masks):
            raise UserError(f"{len(packed_masks)} masks for {len(images)} images: masks and data disagree")
        self.images, self.packed = images, packed_masks
        self.shape = images.shape

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> np.ndarray:
        return apply_packed_masks(self.images[index], self.packed[index])
