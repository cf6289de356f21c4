"""What the image-folder readers (Waterbirds, CelebA, IN-9L) share: metadata parsing and image checks.

A reader parses a dataset's own metadata files and returns, per split, an `ImageRecords`
(masktune.data.samples): the image paths relative to the dataset folder, in the metadata file's order,
with their labels and spurious attribute. Nothing is decoded there; `check_images` and `load_rgb`
open the images, and every problem a user can fix (a missing file, a bad column, a truncated JPEG)
becomes a one-line `UserError` that names the file (and the line or column where it applies).
"""
from __future__ import annotations

import csv
import difflib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from masktune.data.prepared import (
    IMAGE_ERRORS,
    open_image,
    oriented,
    oriented_size,
    sixteen_bit_peak,
    to_rgb,
    unreadable_image,
)
from masktune.data.samples import ImageRecords
from masktune.errors import UserError

# torchvision's ImageFolder extensions (lower case); the official code globs every file.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------------------------------
# Images


def _open_decoded(path: Path) -> Image.Image:
    if not path.is_file():
        raise UserError(f"{path}: image not found")
    try:
        image = open_image(path, path)  # refused from its header when too large to decode
        image.load()  # full decode: verify() does not notice a truncated JPEG
    except IMAGE_ERRORS as error:
        raise unreadable_image(path, error) from None
    return image


def load_rgb(path: str | Path, exif_orientation: str = "ignore", peaks: list[int] | None = None) -> np.ndarray:
    """Decode an image to uint8 (H, W, 3); grey, palette, RGBA (alpha dropped) and CMYK go to RGB, 16-bit
    grey is scaled to 8 bits (`to_rgb`); turned upright by its EXIF tag with `exif_orientation: apply`. A
    16-bit grey image's largest value is appended to `peaks`, where given (`sixteen_bit_peak`)."""
    path = Path(path)
    with _open_decoded(path) as image:
        peak = sixteen_bit_peak(image) if peaks is not None else None
        if peak is not None:
            peaks.append(peak)
        array = np.asarray(to_rgb(oriented(image, exif_orientation), path), dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise UserError(f"{path}: cannot convert image mode {image.mode!r} to RGB")
    return array


def image_size(path: str | Path, exif_orientation: str = "ignore", peaks: list[int] | None = None) -> tuple[int, int]:
    """(height, width) of an image from its header (nothing decoded), as `oriented` would turn it, or a
    UserError naming the file (one over the pixel limit too, `open_image`). With `peaks`, a 16-bit grey
    image is decoded and its largest value appended to them (`sixteen_bit_peak`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image not found")
    try:
        with open_image(path, path) as image:
            peak = sixteen_bit_peak(image) if peaks is not None else None
            if peak is not None:
                peaks.append(peak)
            return oriented_size(image, exif_orientation)
    except IMAGE_ERRORS as error:
        raise unreadable_image(path, error) from None


def check_images(records: ImageRecords) -> int:
    """Open and fully decode every image; UserError naming the first missing or unreadable file.

    Returns the number of images checked. Decoding is what the training reads cost, so this is for
    an explicit check (a data-validation step), not for every read.
    """
    for i in range(len(records)):
        with _open_decoded(records.path(i)):
            pass
    return len(records)


# ---------------------------------------------------------------------------------------------
# Metadata parsing helpers shared by the readers


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (folder {path.parent} does not exist either)"
        raise UserError(f"{path}: {what} not found{hint}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path}: {what} not found")
    return path


def read_csv_rows(path: Path, required: Sequence[str],
                  optional: Sequence[str] = ()) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV file, after checking `required` columns; a column read
    (`required` or `optional`) named twice is refused, where a row would silently keep the last one."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: not a readable CSV file ({error})") from None
    if not header:
        raise UserError(f"{path}: empty file (expected a header with {', '.join(required)})")
    for name in (*required, *optional):
        if header.count(name) > 1:
            first, second = [i + 1 for i, column in enumerate(header) if column == name][:2]
            raise UserError(f"{path}: column {name!r} appears twice in the header (columns {first} and "
                            f"{second}): keep one, or rename the other")
    missing = [name for name in required if name not in header]
    if missing:
        raise UserError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(m) for m in missing)} (found: {', '.join(header)})")
    records = []
    for line, row in rows:
        if len(row) != len(header):
            raise UserError(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
        records.append((line, dict(zip(header, (cell.strip() for cell in row)))))
    return header, records


def parse_code(value: str, allowed: dict[str, int], path: Path, line: int, column: str,
               meaning: str) -> int:
    """`value` as one of the `allowed` codes, else a UserError naming file, line and column."""
    if value in allowed:
        return allowed[value]
    raise UserError(f"{path}: line {line}: column {column!r} must be {meaning}, got {value!r}")


def unknown_name(path: Path, kind: str, name: str, known: Sequence[str]) -> UserError:
    """UserError for a name not in `known`, listing the close ones (or all of them if none is)."""
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    listed = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
    return UserError(f"{path}: unknown {kind} {name!r} ({listed})")


class DirectoryIndex:
    """Existence checks for many files through one listing per folder (200k stats are slow)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[str, set[str]] = {}

    def exists(self, relative: str) -> bool:
        folder, _, name = relative.replace(os.sep, "/").rpartition("/")
        if folder not in self._listings:
            try:
                self._listings[folder] = set(os.listdir(self.root / folder))
            except (FileNotFoundError, NotADirectoryError):
                self._listings[folder] = set()
        return name in self._listings[folder]


def check_listed_files(root: Path, paths: Sequence[str], lines: Sequence[int], listed_in: Path) -> None:
    """UserError naming the first image listed in `listed_in` that is not under `root`."""
    index = DirectoryIndex(root)
    missing = [i for i, p in enumerate(paths) if not index.exists(p)]
    if missing:
        first = missing[0]
        raise UserError(f"{root / paths[first]}: image listed in {listed_in} (line {lines[first]}) not found "
                        f"({len(missing)} of {len(paths)} listed images are missing)")
