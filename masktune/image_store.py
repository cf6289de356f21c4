"""Image-folder datasets (Waterbirds, CelebA, IN-9L) inside the one prepared HDF5 file.

Storage design: each split holds the images' *original file bytes* (JPEG as distributed: nothing
re-encoded, nothing lost) concatenated in one uint8 dataset `encoded`, with `offsets` (N + 1) saying
where each image starts, plus `image_sizes` (N, 2: height, width), `paths` (each image's path in
the source folder, for messages) and the per-sample vectors every split has (labels, attributes,
groups, source_index). Why: DVC hashes one 1.4 GB file (CelebA) in seconds where 202,599 small
files take minutes and as many cache entries; decoded pixels would be 24 GB for CelebA's training
set alone. Images are decoded where they are used, in DataLoader workers, as the official code
decodes its JPEG files.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

from masktune.datasets.records import ImageRecords
from masktune.errors import UserError
from masktune.storage import CHUNK_BYTES, STREAM_CACHE_BYTES, VECTOR_FIELDS, h5_output, open_h5

WRITE_BATCH = 256  # images read and appended at a time while preparing


def _checked_size(data: bytes, path: Path) -> tuple[int, int]:
    """(height, width) of an encoded image, after decoding it (JPEG at 1/8 scale: an eighth of the
    work, and a truncated or corrupt file still fails), or a UserError naming the file."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path}: cannot read image (corrupted or truncated? {reason})") from None
    return height, width


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read image ({error.strerror or error})") from None


def write_image_split(group: h5py.Group, records: ImageRecords, desc: str) -> None:
    """Append every image of `records` to `group` (see the module docstring), checking each decodes."""
    n = len(records)
    encoded = group.create_dataset("encoded", shape=(0,), maxshape=(None,), dtype=np.uint8,
                                   chunks=(CHUNK_BYTES,), track_times=False)
    offsets = np.zeros(n + 1, dtype=np.int64)
    sizes = np.zeros((n, 2), dtype=np.int64)
    for first in tqdm(range(0, n, WRITE_BATCH), desc=desc, unit="batch", disable=None):
        index = range(first, min(first + WRITE_BATCH, n))
        blobs = [_read_bytes(records.path(i)) for i in index]
        for i, blob in zip(index, blobs):
            sizes[i] = _checked_size(blob, records.path(i))
            offsets[i + 1] = offsets[i] + len(blob)
        encoded.resize((offsets[index[-1] + 1],))
        encoded[offsets[first]:] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    group.create_dataset("offsets", data=offsets, track_times=False)
    group.create_dataset("image_sizes", data=sizes, track_times=False)
    group.create_dataset("paths", data=np.array(records.paths, dtype=object), dtype=h5py.string_dtype(),
                         track_times=False)
    vectors = {"labels": records.labels, "attributes": records.attributes, "groups": records.groups,
               "source_index": records.source_index}
    for field in VECTOR_FIELDS:
        group.create_dataset(field, data=np.asarray(vectors[field], dtype=np.int64), track_times=False)


def write_image_splits(path: str | Path, splits: Mapping[str, ImageRecords], attrs: Mapping) -> None:
    """Write every split to one HDF5 file, atomically."""
    with h5_output(path, attrs) as f:
        for name, records in splits.items():
            write_image_split(f.create_group(name), records, desc=f"prepare {name}")


def has_encoded_images(path: str | Path, split: str = "train") -> bool:
    """Whether `split` stores encoded image files (image-folder datasets) rather than pixel arrays."""
    with open_h5(path) as f:
        return f"{split}/encoded" in f


class EncodedImages:
    """Random access to one split's images, decoded to RGB PIL images. Opens its HDF5 handle on first
    use, so each DataLoader worker gets its own (h5py handles do not survive a fork)."""

    def __init__(self, path: str | Path, split: str):
        self.path, self.split = Path(path), split
        with open_h5(self.path) as f:
            if f"{split}/encoded" not in f:
                raise UserError(f"{self.path}: split '{split}' has no encoded images")
            self.offsets = f[f"{split}/offsets"][()]
            self.sizes = f[f"{split}/image_sizes"][()]
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def source_path(self, i: int) -> str:
        with open_h5(self.path) as f:
            return f[f"{self.split}/paths"][i].decode()

    def __getitem__(self, i: int) -> Image.Image:
        if self._file is None:
            self._file = open_h5(self.path, STREAM_CACHE_BYTES)
        blob = self._file[f"{self.split}/encoded"][self.offsets[i]:self.offsets[i + 1]]
        try:
            with Image.open(io.BytesIO(blob.tobytes())) as image:
                return image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(f"{self.path}: image {i} of '{self.split}' ({self.source_path(i)}) cannot be "
                            f"decoded ({error}); rerun prepare") from None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}
