"""The masks file (`data/masks.h5`) and the one place masks are applied to images.

Storage design (measured in bench/storage_scaling.py, numbers in the README): `materialize_masked_dataset`
stores *bit-packed masks* at the resolution the saliency saw (the masking view), `masks`, uint8
(N, ceil(h*w/8)), gzip, not masked copies of the images. A mask is one bit per pixel where a masked RGB
copy is 24, and the compressed masks are smaller still (salient regions are a few blobs), so MaskTune
adds kilobytes per image instead of duplicating the data. The finetune's split zeroes the masked pixels
as it reads each image (`MaskSource.apply`), as the official code's masked PNG files have them: the
view mask is put on the raw image through the view's geometry (`views.mask_to_raw`, `alignment`), then
the masked pixels are set to 0 in every channel.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from masktune.data.views import Geometry, mask_to_raw
from masktune.errors import UserError
from masktune.io.hdf5 import create_rows, h5_output, open_h5, read_rows

RANDOM_READ_CHUNK_BYTES = 64 << 10  # a shuffled finetune reads one mask at a time: decompress little


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, ceil(H*W/8)) uint8, one bit per pixel: 1/8 of a bool array's bytes
    before compression."""
    return np.packbits(masks.reshape(len(masks), -1), axis=1)


def unpack_masks(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of `pack_masks`."""
    return np.unpackbits(packed, axis=1, count=height * width).reshape(len(packed), height, width).astype(bool)


def apply_masks(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Zero the masked pixels (every channel) of uint8 images (N, H, W, C); masks (N, H, W)."""
    if len(images) != len(masks):
        raise UserError(f"{len(masks)} masks for {len(images)} images: saliency and data disagree")
    if masks.shape[1:] != images.shape[1:3]:
        raise ValueError(f"masks of {masks.shape[1:]} for images of {images.shape[1:3]}")
    return np.where(masks[..., None], np.uint8(0), images)


def write_masks(out: str | Path, rows: int, size: tuple[int, int], chunks: Iterable[tuple[int, np.ndarray]],
                attrs: dict) -> np.ndarray:
    """Write (first row, bool masks (B, h, w)) chunks packed, atomically; return each image's masked
    pixel fraction."""
    height, width = size
    fraction = np.empty(rows, dtype=np.float64)
    with h5_output(out, {**attrs, "image_size": [height, width]}) as f:
        packed = create_rows(f, "masks", rows, (-(-height * width // 8),), np.uint8, chunk_bytes=RANDOM_READ_CHUNK_BYTES)
        for first, masks in chunks:
            fraction[first:first + len(masks)] = masks.reshape(len(masks), -1).mean(axis=1)
            packed[first:first + len(masks)] = pack_masks(masks)
    return fraction


def check_masks_file(path: str | Path, rows: int, size: tuple[int, int]) -> None:
    """UserError unless `path` holds masks for `rows` images of `size` (reads no mask)."""
    with open_h5(path) as f:
        if "masks" not in f or "image_size" not in f.attrs:
            raise UserError(f"{path}: not a masks file of this project; rerun materialize_masked_dataset")
        stored = tuple(int(s) for s in f.attrs["image_size"])
        if f["masks"].shape[0] != rows or stored != tuple(size):
            raise UserError(f"{path}: masks for {f['masks'].shape[0]} images of {stored}, but the data has "
                            f"{rows} of {tuple(size)}: rerun `dvc repro`")


def read_masks_attrs(path: str | Path) -> dict:
    """What a masks file records of the masks: the method that made them, its title, the image size."""
    with open_h5(path) as f:
        return dict(f.attrs)


def masks_method(path: str | Path) -> str:
    """The name of the method that made the masks ("masktune", "randmask")."""
    with open_h5(path) as f:
        if "method" not in f.attrs:
            raise UserError(f"{path}: not a masks file of this project; rerun materialize_masked_dataset")
        return str(f.attrs["method"])


def read_masks(path: str | Path, rows: int, size: tuple[int, int], index: np.ndarray | None = None) -> np.ndarray:
    """Boolean masks (all, or the rows `index`), checked against the images they belong to."""
    return unpack_masks(read_packed_masks(path, rows, size, index), *size)


def read_packed_masks(path: str | Path, rows: int, size: tuple[int, int],
                      index: np.ndarray | None = None) -> np.ndarray:
    check_masks_file(path, rows, size)
    if index is None:
        with open_h5(path) as f:
            return f["masks"][()]
    return read_rows(path, "masks", index)


class MaskSource:
    """The masks of a training split, put on the raw images they belong to.

    `view_size` is the masking view's (h, w), `geometry` the masking view's geometry and `alignment`
    how a view mask maps back to the raw image (`views.mask_to_raw`: `crop` through the exact geometry,
    `stretch` as the official cv2 resize; for pixel datasets the view is the image and both are the
    identity). `in_memory` reads every packed mask up front (small images, batched reads); otherwise
    each mask is read when its image is (one worker handle per process).
    """

    def __init__(self, path: str | Path, rows: int, view_size: tuple[int, int], geometry: Geometry,
                 alignment: str, in_memory: bool = False):
        self.path, self.view_size, self.geometry, self.alignment = Path(path), tuple(view_size), geometry, alignment
        self._packed = read_packed_masks(path, rows, view_size) if in_memory else None  # checks the file
        if not in_memory:
            check_masks_file(path, rows, view_size)
        self._file = None

    def _view_masks(self, index: np.ndarray) -> np.ndarray:
        if self._packed is not None:
            packed = self._packed[index]
        else:
            if self._file is None:
                self._file = open_h5(self.path)
            packed = np.stack([self._file["masks"][int(i)] for i in index])
        return unpack_masks(packed, *self.view_size)

    def apply(self, images: np.ndarray, index: np.ndarray) -> np.ndarray:
        """uint8 raw images (B, H, W, C) of the rows `index`, with their masked pixels set to 0."""
        masks = mask_to_raw(self._view_masks(np.asarray(index)), images.shape[1], images.shape[2],
                            self.geometry, self.alignment)
        return apply_masks(images, masks)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}
