"""HDF5 helpers every file format of the pipeline shares: chunked rows, reads of a few rows, clear errors.

Datasets are written with `track_times=False`, so the same inputs give byte-identical files (DVC then
sees no change on a rerun), and into a temporary file renamed into place when complete (`h5_output`).
Every array is chunked with HDF5's Fletcher-32 checksum filter, so a byte changed on disk after the write
(a label edited in place, a bit flipped, a damaged compressed chunk) fails the read of its chunk instead of
changing a reported accuracy; `run_stage` reports that failure in one line naming the file and dataset
(`corrupted_read`). Variable-length strings (image paths, for messages only) take no filter.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from masktune.errors import UserError, register_translator
from masktune.io.files import atomic_output, disk_full_cause, raise_if_disk_full

CHUNK_BYTES = 1 << 20  # ~1 MiB chunks: a batch read decompresses little more than it needs
CHUNK_CACHE_BYTES = 64 << 20  # per open file: a batch spanning several chunks decompresses each once
STREAM_CACHE_BYTES = 4 << 20  # for one front-to-back pass: every chunk is read once, keep few of them


def chunk_rows(row_bytes: int, n: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per HDF5 chunk: about `chunk_bytes` of data (1 MiB: MNIST 445 images, 224 x 224 RGB 6),
    so reading one batch never decompresses hundreds of megabytes it does not use."""
    return int(max(1, min(n, 1024, chunk_bytes // max(1, row_bytes))))


def create_rows(group: h5py.Group, name: str, n: int, row_shape: tuple, dtype,
                chunk_bytes: int = CHUNK_BYTES, compress: bool = True) -> h5py.Dataset:
    """An (n, *row_shape) dataset to fill batch by batch: chunked by rows, checksummed, gzip-compressed
    unless `compress` is False (a resume journal's shards, written often and read once). Smaller
    `chunk_bytes` for data read one random row at a time (the masks of a shuffled finetune)."""
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    chunks = (chunk_rows(row_bytes, n, chunk_bytes),) + tuple(row_shape) if n > 0 else None
    gzip = compress and chunks is not None
    return group.create_dataset(name, shape=(n,) + tuple(row_shape), dtype=dtype, chunks=chunks,
                                compression="gzip" if gzip else None, compression_opts=4 if gzip else None,
                                shuffle=gzip and np.dtype(dtype).itemsize > 1, fletcher32=chunks is not None,
                                track_times=False)


def write_array(group: h5py.Group, name: str, array: np.ndarray, compress: bool = True) -> None:
    """`array` as dataset `name` (checksummed, as `create_rows`), its chunks flushed here: a write that fails
    (a full disk) raises now, not later when h5py frees the dataset, where it could only be reported as an
    ignored exception."""
    array = np.asarray(array)
    if array.ndim >= 1 and len(array) > 0:
        dataset = create_rows(group, name, len(array), array.shape[1:], array.dtype, compress=compress and array.ndim > 1)
        dataset[...] = array
    else:
        dataset = group.create_dataset(name, data=array, track_times=False)
    dataset.flush()


@contextlib.contextmanager
def h5_output(path: str | Path, attrs: Mapping | None = None) -> Iterator[h5py.File]:
    """An HDF5 file to fill incrementally, renamed into place only when the block completes.

    A full disk or a file size limit ends the block with one line (`DiskFullError`), whichever write met
    it: HDF5 writes a dataset's chunks when the dataset object is freed, where h5py can only report the
    failure as an ignored exception (caught here through `sys.unraisablehook`), or at the flush before
    closing. The file is then left unclosed (HDF5 would only fail again, and crash at exit: the stage ends
    at once, `run_stage`) and its temporary name removed."""
    failed: list[OSError] = []
    previous_hook = sys.unraisablehook

    def keep_disk_full(unraisable) -> None:
        if disk_full_cause(unraisable.exc_value):
            failed.append(unraisable.exc_value)
        else:
            previous_hook(unraisable)

    sys.unraisablehook = keep_disk_full
    try:
        with atomic_output(path) as tmp:
            f = h5py.File(tmp, "w")
            try:
                for key, value in (attrs or {}).items():
                    f.attrs[key] = value
                yield f
                if not failed:
                    f.flush()
                if failed:
                    raise failed[0]
            except (OSError, RuntimeError) as error:
                raise_if_disk_full(error, Path(path))
                f.close()
                raise
            except BaseException:
                if not failed:
                    f.close()
                raise
            f.close()
    finally:
        sys.unraisablehook = previous_hook


def write_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], attrs: Mapping | None = None,
                 compress: bool = True) -> None:
    """Write named arrays (e.g. saliency maps) to one HDF5 file atomically."""
    with h5_output(path, attrs) as f:
        for name, array in arrays.items():
            write_array(f, name, array, compress)


CORRUPTED_READ = ("filter returned failure", "can't read data", "can't synchronously read data", "checksum",
                  "inflate", "bad value(s) in", "wrong b-tree signature")


def corrupted_read(error: BaseException) -> UserError | None:
    """The one line for an HDF5 read that failed on damaged data (a checksum or decompression failure),
    naming the file and the dataset being read (found in the traceback: h5py's `Dataset` whose read raised);
    None for any other error. `run_stage` asks (`errors.register_translator`)."""
    if not isinstance(error, (OSError, RuntimeError)) or not any(m in str(error).lower() for m in CORRUPTED_READ):
        return None
    dataset, tb = None, error.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, h5py.Dataset):
            dataset = candidate
        tb = tb.tb_next
    if dataset is None:
        return None
    try:
        where = f"{dataset.file.filename}: dataset '{dataset.name}'"
    except (ValueError, RuntimeError):  # the file was closed meanwhile
        where = "an HDF5 input"
    reason = str(error).splitlines()[0][:160]
    return UserError(f"{where} does not read back ({reason}): the file was changed or damaged after it was written; "
                     "restore it with `dvc checkout` or rebuild it with `dvc repro`")


register_translator(corrupted_read)


class _CheckedFile(h5py.File):
    """An HDF5 file opened for reading whose `with` block turns a read of damaged data into the one line of
    `corrupted_read` while the file is still open (its name and the dataset's are lost once it closes)."""

    def __exit__(self, kind, error, traceback) -> None:
        known = corrupted_read(error) if error is not None else None
        super().__exit__(kind, error, traceback)
        if known is not None:
            raise known from None


def open_h5(path: str | Path, cache_bytes: int = CHUNK_CACHE_BYTES) -> h5py.File:
    """Open an HDF5 file for reading (a clear message when it is missing or not HDF5, or when data read in
    its `with` block fails its checksum: `corrupted_read`). A stage that streams a dataset once from front
    to back passes `STREAM_CACHE_BYTES`: its memory then does not grow with the file until the default
    cache is full."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (run the stage that writes it: `dvc repro`)")
    try:
        return _CheckedFile(path, "r", rdcc_nbytes=cache_bytes)
    except OSError as error:
        raise UserError(f"{path}: not a readable HDF5 file ({error})") from None


def read_arrays(path: str | Path, names: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    """Read named arrays, checking each against an expected shape (None = any size on that axis)."""
    out = {}
    with open_h5(path) as f:
        for name, shape in names.items():
            if name not in f:
                raise UserError(f"{path}: no dataset '{name}'")
            array = f[name]
            if len(array.shape) != len(shape) or any(e is not None and e != a
                                                     for e, a in zip(shape, array.shape)):
                wanted = "(" + ", ".join("N" if e is None else str(e) for e in shape) + ")"
                raise UserError(f"{path}: '{name}' has shape {array.shape}, expected {wanted}")
            out[name] = array[()]
    return out


def read_attrs(path: str | Path) -> dict:
    with open_h5(path) as f:
        return dict(f.attrs)


def dataset_shape(path: str | Path, name: str, ndim: int, dtype=None) -> tuple[int, ...]:
    """Shape of dataset `name`, checked for `ndim` dimensions (and dtype), without reading it."""
    with open_h5(path) as f:
        if name not in f:
            raise UserError(f"{path}: no dataset '{name}' (has: {', '.join(f.keys())})")
        data = f[name]
        if data.ndim != ndim or (dtype is not None and data.dtype != np.dtype(dtype)):
            raise UserError(f"{path}: '{name}' is {data.dtype} {data.shape}, expected {ndim} dimensions"
                            + (f" of {np.dtype(dtype)}" if dtype is not None else ""))
        return tuple(data.shape)


def read_rows(path: str | Path, name: str, index: np.ndarray) -> np.ndarray:
    """Rows `index` (any order) of dataset `name`, reading only the chunks that hold them."""
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    unique, inverse = np.unique(index[order], return_inverse=True)
    with open_h5(path) as f:
        rows = f[name][unique] if len(unique) else f[name][:0]
    out = np.empty((len(index),) + rows.shape[1:], dtype=rows.dtype)
    out[order] = rows[inverse]
    return out
