"""Stream a split's images from HDF5 in contiguous batches, so memory depends on the batch, not on N.

A `DataLoader` over `ImageBatches` reads batch i+1 (decompression included) in a worker process while
the model computes batch i; each worker opens its own HDF5 handle (h5py handles do not survive a
fork). Batches are contiguous row ranges, so each read touches only the chunks that hold them.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from masktune.errors import UserError
from masktune.storage import STREAM_CACHE_BYTES, open_h5


class ImageBatches(Dataset):
    """Item i = (first row, uint8 images (B, H, W, C)) of batch i of `split`, from row `start` on."""

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


def stream_images(path: str | Path, split: str, batch_size: int, start: int = 0, workers: int = 1,
                  pin_memory: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first row, uint8 batch) in order from row `start`, prefetching with `workers` processes
    (0: read in this process)."""
    batches = ImageBatches(path, split, batch_size, start)
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                        prefetch_factor=2 if workers else None)
    try:
        yield from loader
    finally:
        batches.close()


def split_length(path: str | Path, split: str) -> int:
    with open_h5(path) as f:
        if f"{split}/labels" not in f:
            raise UserError(f"{path}: no split '{split}'")
        return int(f[f"{split}/labels"].shape[0])


def read_vectors(path: str | Path, split: str, *names: str) -> list[np.ndarray]:
    """Per-sample vectors (labels, attributes, ...) of a split: small, read whole."""
    with open_h5(path) as f:
        return [f[f"{split}/{name}"][()] for name in names]
