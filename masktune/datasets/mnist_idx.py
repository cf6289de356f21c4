"""MNIST in its standard IDX format: read from a local folder, or from the download location
(`download_dir/mnist`), where torchvision downloads it the first time.

The folder may hold the four files gzipped (`train-images-idx3-ubyte.gz`, ...) or raw, either at
its top or under `MNIST/raw/` (torchvision's layout). Every way the files can be wrong (missing,
truncated, not gzip, wrong magic number, image and label counts that disagree) ends in a
`UserError` naming the file.
"""
from __future__ import annotations

import gzip
import tempfile
import zlib
from pathlib import Path

import numpy as np

from masktune.errors import UserError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned bytes, 3 dims (images) / 1 dim (labels)
DEFAULT_PARAM = "prepare.biased_mnist.mnist_dir"


def download_hint(param: str = DEFAULT_PARAM) -> str:
    """What to do when MNIST is missing, naming the dataset's own param (biased MNIST's, C-MNIST's)."""
    return (f"set {param} in params.yaml to a folder holding the four MNIST IDX files "
            f"(e.g. `dvc exp run -S {param}=../shared/data/mnist`)")


def _find(folder: Path, stem: str, param: str = DEFAULT_PARAM) -> Path:
    for base in (folder, folder / "MNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (base / name).is_file():
                return base / name
    raise UserError(f"{folder}: missing MNIST file {stem}(.gz); {download_hint(param)}")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes with `ndim` dimensions."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{path}: cannot be read as gzip ({error})") from None
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != _MAGIC[ndim]:
        raise UserError(f"{path}: not an IDX file of {ndim}-dimensional unsigned bytes "
                        f"(bad magic number)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise UserError(f"{path}: truncated or corrupt: {len(raw)} bytes, header says {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_mnist_split(folder: Path, split: str, param: str = DEFAULT_PARAM) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and digits (N,) int64 of the `train` or `test` split. `param`: the
    params key the folder came from, named in the errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{param}: {folder} is not a folder; {download_hint(param)}")
    image_stem, label_stem = FILES[split]
    images = read_idx(_find(folder, image_stem, param), 3)
    digits = read_idx(_find(folder, label_stem, param), 1).astype(np.int64)
    if len(images) != len(digits):
        raise UserError(f"{folder}: {image_stem} has {len(images)} images but {label_stem} "
                        f"has {len(digits)} labels")
    if digits.max(initial=0) > 9:
        raise UserError(f"{folder}: {label_stem} holds labels above 9: not MNIST")
    return images, digits


def download_mnist(into: Path, param: str = DEFAULT_PARAM) -> Path:
    """Download MNIST with torchvision into `into`; a clear message says what to do when offline."""
    from torchvision.datasets import MNIST

    try:
        MNIST(root=str(into), train=True, download=True)
        MNIST(root=str(into), train=False, download=True)
    except Exception as error:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"could not download MNIST ({reason[:200]}); {download_hint(param)}") from None
    return into / "MNIST" / "raw"


def _complete(folder: Path) -> bool:
    """Whether `folder` holds the four files where `_find` looks for them."""
    return all(any((base / (stem + ext)).is_file() for base in (folder, folder / "MNIST" / "raw")
                   for ext in (".gz", "")) for stems in FILES.values() for stem in stems)


def cached_mnist(cache: Path, param: str = DEFAULT_PARAM) -> Path:
    """The download location `cache`, holding the four files: downloaded there the first time, into a
    temporary folder beside it renamed when complete, so that an interrupted download leaves nothing
    that looks done."""
    cache = Path(cache)
    if _complete(cache):
        return cache
    if cache.exists():
        raise UserError(f"{cache}: an incomplete MNIST download location; delete it to download again, or "
                        f"{download_hint(param)}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mnist-download-", dir=cache.parent) as tmp:
        download_mnist(Path(tmp), param).rename(cache)
    return cache


def load_mnist(folder: Path | None, param: str = DEFAULT_PARAM,
               cache: Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits, from `folder`; when `folder` is None, from the download location `cache`
    (`cached_mnist`), or, without one, downloaded into a temporary folder. `param`: the params key of
    the folder (`prepare.<dataset>.mnist_dir`), for the error messages."""
    if folder is None and cache is not None:
        folder = cached_mnist(cache, param)
    if folder is not None:
        return {split: load_mnist_split(folder, split, param) for split in FILES}
    with tempfile.TemporaryDirectory(prefix="mnist-download-") as tmp:
        raw = download_mnist(Path(tmp), param)
        return {split: load_mnist_split(raw, split, param) for split in FILES}
