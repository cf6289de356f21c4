"""The prepared data file (`data/prepared.h5`): written by `prepare`, read by every later stage.

One HDF5 group per split (`train`, `val`, `test_*`), each with the per-sample vectors `labels`,
`attributes` (the spurious attribute), `groups` (attribute * num_classes + label) and `source_index` (the
sample's index in the file it came from), and the images in one of two forms:

- **pixels**, `images` (N, H, W, C) uint8, chunked and gzip-compressed: small images built in memory
  (biased MNIST, 28 x 28);
- **encoded files**, the images' *original file bytes* (JPEG as distributed: nothing re-encoded,
  nothing lost) concatenated in one uint8 dataset `encoded`, with `offsets` (N + 1), `image_sizes`
  (N, 2: height, width) and `paths` (for messages). DVC hashes one 1.4 GB file (CelebA) in seconds
  where 202,599 small files take minutes and as many cache entries; decoded pixels would be 24 GB for
  CelebA's training set alone. Images are decoded where they are used, in DataLoader workers, as the
  official code decodes its JPEG files.
- **both**, for the training split of a folder read with `transforms: resize` whose files are not all of
  the view's size: `images` hold the resized view every pass reads, and the files are kept beside them
  (file attribute `stored_view`: the geometry that made `images`) so that MaskTune's masks are put on
  each file as stored, as the official code puts them (`masktune.data.splits.RemaskedViewSplit`).

Which form a split has is this module's and `masktune.data.splits`' business only: everything else
reads splits through `splits.open_split`. File attributes: `dataset`, `num_classes`, `class_names`, `group_names`,
`groups_known`, `test_splits`, `average`, `metrics` and `views` (`DatasetViews.to_json`): everything a later stage
needs to know of the dataset (`DatasetInfo`, `open_prepared`), so that no later stage imports a dataset module
and editing one dataset's module reruns no other dataset's later stages.
"""
from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from masktune.data.samples import ImageRecords, SampleSet
from masktune.data.views import DatasetViews, Geometry
from masktune.errors import UserError
from masktune.io.hdf5 import CHUNK_BYTES, STREAM_CACHE_BYTES, h5_output, open_h5, read_attrs, read_rows, write_array

VECTOR_FIELDS = ("labels", "attributes", "groups", "source_index")
METRICS = ("groups", "background_challenge")  # what `evaluate` reports: group accuracies, and IN-9L's BG-gap
WRITE_BATCH = 256  # images read and appended at a time while preparing


# ---------------------------------------------------------------------------------------------
# Write side


def write_prepared(path: str | Path, splits: Mapping[str, SampleSet | ImageRecords], attrs: Mapping) -> None:
    """Write every split (all pixels or all image files) to one HDF5 file, atomically."""
    if all(isinstance(s, SampleSet) for s in splits.values()):
        _write_pixel_splits(path, splits, attrs)
    else:
        exif_orientation = attrs.get("exif_orientation", "ignore")
        with h5_output(path, attrs) as f:
            for name, records in splits.items():
                _write_image_split(f.create_group(name), records, f"prepare {name}", exif_orientation)


def _write_pixel_splits(path: str | Path, splits: Mapping[str, SampleSet], attrs: Mapping) -> None:
    with h5_output(path, attrs) as f:
        for name, samples in splits.items():
            group = f.create_group(name)
            write_array(group, "images", np.ascontiguousarray(samples.images, dtype=np.uint8))
            for field in VECTOR_FIELDS:
                write_array(group, field, np.asarray(getattr(samples, field), dtype=np.int64))
            if samples.files is not None:
                _write_encoded(group, samples.files, f"prepare {name} (files)", attrs.get("exif_orientation", "ignore"))


IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)  # what Pillow raises on a bad file


def unreadable_image(path: str | Path, error: Exception) -> UserError:
    """The one-line error for an image Pillow cannot open or decode, naming the file and Pillow's reason."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(f"{path}: cannot read image (corrupted or truncated? {reason})")


# The most pixels an image may have to be decoded here: 8192 x 8192 (67 M), checked from the header
# (`open_image`). Pillow's own guard (Image.MAX_IMAGE_PIXELS, 89 M) only warns up to 179 M, and a PNG of a
# few hundred KB can declare that many: 179 M pixels take 716 MB in Pillow's RGB, 1.4 GB more in the float64
# scaling of 16-bit grey (`to_rgb`), in each DataLoader worker at once. The networks here see at most a
# few hundred pixels a side after the resize, and 67 M pixels is more than any camera up to 61 MP
# (9504 x 6336) takes; larger scans (pathology slides, satellite tiles) are to be downscaled or tiled first.
MAX_IMAGE_PIXELS = 8192 * 8192


def open_image(source: str | Path | io.BytesIO, path: str | Path) -> Image.Image:
    """`Image.open` (the header only) of an image within MAX_IMAGE_PIXELS, else a UserError naming `path` and
    its size, before anything is decoded. Pillow's warning for images over its own limit is ours to give."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError:  # over twice Pillow's limit: refused by Pillow in the header
            raise _too_large(path, f"over {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise _too_large(path, f"{width} x {height} pixels (width x height: {width * height:,})")
    return image


def _too_large(path: str | Path, size: str) -> UserError:
    return UserError(f"{path}: image is {size}: more than the {MAX_IMAGE_PIXELS:,} pixels (8192 x 8192) an image "
                     "may have to be decoded (masktune.data.prepared.MAX_IMAGE_PIXELS); downscale it, or cut it "
                     "into tiles")


SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")
NO_FIXED_RANGE = ("I", "F")  # 32-bit integer and float pixels: refused by `to_rgb`

# How a camera's EXIF Orientation tag is treated (`prepare.folder.exif_orientation`): `ignore` reads the
# pixels in stored order, as torchvision's ImageFolder (PIL's `Image.open`) does, so the default trains on
# what torchvision would; `apply` turns each image upright first, as a photo viewer shows it (Pillow's
# `ImageOps.exif_transpose`). Recorded in the prepared file (attribute `exif_orientation`) and applied
# wherever its images are decoded.
EXIF_ORIENTATIONS = ("ignore", "apply")
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF values that rotate by 90 degrees: height and width swap
ORIENTATION_TAG = 0x0112


def oriented(image: Image.Image, exif_orientation: str) -> Image.Image:
    """`image` as `exif_orientation` says (see EXIF_ORIENTATIONS); the image itself when nothing turns."""
    if exif_orientation == "apply":
        return ImageOps.exif_transpose(image)
    return image


def oriented_size(image: Image.Image, exif_orientation: str) -> tuple[int, int]:
    """(height, width) as `oriented` would give it, from the header alone (nothing decoded)."""
    width, height = image.size
    if exif_orientation == "apply" and image.getexif().get(ORIENTATION_TAG) in TRANSPOSING_ORIENTATIONS:
        return width, height
    return height, width


def to_rgb(image: Image.Image, path: object = None) -> Image.Image:
    """`image` as 8-bit RGB. 16-bit greyscale (X-rays, microscopy) is scaled to 8 bits, value x 255 / 65535
    rounded: Pillow's own `convert("RGB")` clips it to 255, turning a 16-bit ramp 99.6% white. Always the
    format's range, whatever the values: the PNG standard scales a 12-bit sample up to 16 bits when storing
    it (its sBIT chunk only records the original depth), and a per-image scale would give each
    image its own contrast; files holding raw 12-bit values (at most 4095) keep 17 grey levels, and `prepare`
    says so, once per split (`sixteen_bit_peak`, masktune.datasets.folder). (16-bit RGB
    PNGs Pillow already opens as 8-bit RGB, each value's high byte: within one level.) 32-bit integer and
    float images have no fixed range to scale from: refused in one line naming the file. Always a new,
    loaded image (as `convert` returns), usable after `image`'s file is closed."""
    if image.mode in SIXTEEN_BIT_GREY:
        grey = np.rint(np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    if image.mode in NO_FIXED_RANGE:
        raise UserError(f"{path or 'image'}: {'32-bit integer' if image.mode == 'I' else 'floating-point'} pixels "
                        f"(mode {image.mode!r}) have no fixed range to scale to 8 bits: save it as 8- or 16-bit")
    return image.convert("RGB")


TWELVE_BIT_PEAK = 4095


def sixteen_bit_peak(image: Image.Image) -> int | None:
    """The largest value of a loaded 16-bit greyscale image, None for any other mode: one at most
    TWELVE_BIT_PEAK is 12-bit data (or less) that `to_rgb` maps to the 17 lowest of the 256 grey levels."""
    if image.mode not in SIXTEEN_BIT_GREY:
        return None
    return int(np.asarray(image).max(initial=0))


def _checked_size(data: bytes, path: Path, exif_orientation: str = "ignore") -> tuple[int, int]:
    """(height, width) of an encoded image as it will be seen (`oriented_size`), after decoding it (JPEG
    at 1/8 scale: an eighth of the work, and a truncated or corrupt file still fails), or a UserError
    naming the file; one over MAX_IMAGE_PIXELS is refused from its header (`open_image`)."""
    try:
        with open_image(io.BytesIO(data), path) as image:
            size = oriented_size(image, exif_orientation)
            image.draft("RGB", (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
            image.load()
    except IMAGE_ERRORS as error:
        raise unreadable_image(path, error) from None
    return size


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read image ({error.strerror or error})") from None


def _write_image_split(group: h5py.Group, records: ImageRecords, desc: str, exif_orientation: str = "ignore") -> None:
    """Every image of `records` (`_write_encoded`) and its per-sample vectors."""
    _write_encoded(group, records, desc, exif_orientation)
    vectors = {"labels": records.labels, "attributes": records.attributes, "groups": records.groups,
               "source_index": records.source_index}
    for field in VECTOR_FIELDS:
        write_array(group, field, np.asarray(vectors[field], dtype=np.int64))


def _write_encoded(group: h5py.Group, records: ImageRecords, desc: str, exif_orientation: str = "ignore") -> None:
    """Append every image file of `records` to `group` (see the module docstring), checking each decodes;
    `image_sizes` are the sizes as the images will be seen (`oriented_size`)."""
    n = len(records)
    encoded = group.create_dataset("encoded", shape=(0,), maxshape=(None,), dtype=np.uint8,
                                   chunks=(CHUNK_BYTES,), fletcher32=True, track_times=False)
    offsets = np.zeros(n + 1, dtype=np.int64)
    sizes = np.zeros((n, 2), dtype=np.int64)
    for first in tqdm(range(0, n, WRITE_BATCH), desc=desc, unit="batch", disable=None):
        index = range(first, min(first + WRITE_BATCH, n))
        blobs = [_read_bytes(records.path(i)) for i in index]
        for i, blob in zip(index, blobs):
            sizes[i] = _checked_size(blob, records.path(i), exif_orientation)
            offsets[i + 1] = offsets[i] + len(blob)
        encoded.resize((offsets[index[-1] + 1],))
        encoded[offsets[first]:] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    write_array(group, "offsets", offsets)
    write_array(group, "image_sizes", sizes, compress=False)
    group.create_dataset("paths", data=np.array(records.paths, dtype=object), dtype=h5py.string_dtype(),
                         track_times=False)


# ---------------------------------------------------------------------------------------------
# Read side


class PreparedFile:
    """The read side of a prepared file: its attributes, and each split's vectors and images."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.attrs = read_attrs(self.path)

    @property
    def dataset(self) -> str:
        return str(self._attr("dataset"))

    @property
    def num_classes(self) -> int:
        return int(self._attr("num_classes"))

    @property
    def group_names(self) -> dict[int, str]:
        """Group id -> name, as `prepare` recorded them for this dataset (and its params)."""
        return {int(g): name for g, name in json.loads(str(self._attr("group_names"))).items()}

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class id -> name, as `prepare` recorded them (a folder's class folders or CSV labels)."""
        return tuple(json.loads(str(self._attr("class_names"))))

    @property
    def groups_known(self) -> bool:
        """Whether the groups are (class, spurious attribute) pairs; else they are the classes."""
        return bool(self._attr("groups_known"))

    def _attr(self, name: str):
        if name not in self.attrs:
            raise UserError(f"{self.path}: no '{name}' recorded (written by an older prepare): rerun `dvc repro`")
        return self.attrs[name]

    def _split(self, f: h5py.File, split: str) -> h5py.Group:
        if split not in f:
            raise UserError(f"{self.path}: no split '{split}' (has: {', '.join(f.keys())})")
        return f[split]

    def length(self, split: str) -> int:
        with open_h5(self.path) as f:
            return int(self._split(f, split)["labels"].shape[0])

    def vectors(self, split: str, *names: str) -> list[np.ndarray]:
        """Per-sample vectors (labels, groups, ...) of a split: small, read whole."""
        with open_h5(self.path) as f:
            group = self._split(f, split)
            return [group[name][()] for name in names]

    def stores_pixels(self, split: str) -> bool:
        """Whether `split` holds pixel arrays (else encoded image files)."""
        with open_h5(self.path) as f:
            return "images" in self._split(f, split)

    def stores_files(self, split: str) -> bool:
        """Whether `split` holds its image files (alone, or beside the pixels of a resized view)."""
        with open_h5(self.path) as f:
            return "encoded" in self._split(f, split)

    def stored_view(self) -> Geometry | None:
        """The geometry that made a pixel split's `images` from the files kept beside them (a folder read
        with `transforms: resize`); None where the pixels are the images as they are."""
        text = str(self.attrs.get("stored_view", ""))
        return Geometry.from_json_value(json.loads(text)) if text else None

    def pixels(self, split: str, rows: np.ndarray | None = None) -> np.ndarray:
        """uint8 (N, H, W, C) of a pixel split (all of it, or the rows `rows`), shape checked."""
        key = f"{split}/images"
        with open_h5(self.path) as f:
            if "images" not in self._split(f, split):
                raise UserError(f"{self.path}: split '{split}' has no pixel images")
            images = f[key]
            if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
                raise UserError(f"{self.path}: {key} must be uint8 of shape (N, H, W, 1 or 3), "
                                f"got {images.dtype} {images.shape}")
            if rows is None:
                return images[()]
        return read_rows(self.path, key, rows)

    def pixel_size(self, split: str) -> tuple[int, int]:
        """(height, width) of a pixel split's images, without reading them."""
        with open_h5(self.path) as f:
            return tuple(int(s) for s in f[f"{split}/images"].shape[1:3])

    def first_image_size(self, split: str) -> tuple[int, int]:
        """(height, width) of the first raw image of an encoded split."""
        with open_h5(self.path) as f:
            return tuple(int(s) for s in f[f"{split}/image_sizes"][0])

    def samples(self, split: str) -> SampleSet:
        """A pixel split whole, in memory, its vectors checked against each other."""
        images = self.pixels(split)
        vectors = self.vectors(split, *VECTOR_FIELDS)
        for name, vector in zip(VECTOR_FIELDS, vectors):
            if vector.shape != (len(images),):
                raise UserError(f"{self.path}: {split}/{name} has shape {vector.shape}, expected "
                                f"({len(images)},) to match {split}/images")
        labels, attributes, groups, source_index = vectors
        samples = SampleSet(images, labels, attributes, source_index, self.num_classes)
        if not np.array_equal(groups, samples.groups):
            raise UserError(f"{self.path}: {split}/groups is not attributes * num_classes + labels")
        return samples


@dataclass(frozen=True)
class DatasetInfo:
    """What every stage after `prepare` knows of the dataset in a prepared file, read from the file alone
    (`open_prepared`): its classes and groups, the test splits `evaluate` reports, the accuracy its
    literature calls average (a key of `masktune.eval.metrics.group_metrics`), the metrics beyond the group
    accuracies (`METRICS`) and how its images are viewed."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    group_names: dict[int, str]
    groups_known: bool
    test_splits: tuple[str, ...]
    average: str
    metrics: str
    views: DatasetViews

    @classmethod
    def read(cls, prepared: PreparedFile) -> DatasetInfo:
        """The info `prepare` recorded; one line (rerun `dvc repro`) for a file written before it did."""
        views = _views(prepared)  # first: the attribute an older prepare lacks, or wrote in another format
        return cls(prepared.dataset, prepared.num_classes, prepared.class_names, prepared.group_names,
                   prepared.groups_known, _test_splits(prepared), str(prepared._attr("average")),
                   _metrics(prepared), views)


def _older_format(prepared: PreparedFile, name: str, reason: str) -> UserError:
    return UserError(f"{prepared.path}: '{name}' is not in this version's format ({reason}; written by an older "
                     "prepare): rerun `dvc repro`")


def _views(prepared: PreparedFile) -> DatasetViews:
    try:
        return DatasetViews.from_json(str(prepared._attr("views")))
    except ValueError as error:
        raise _older_format(prepared, "views", str(error).splitlines()[0]) from None


def _test_splits(prepared: PreparedFile) -> tuple[str, ...]:
    try:
        splits = json.loads(str(prepared._attr("test_splits")))
    except json.JSONDecodeError as error:
        raise _older_format(prepared, "test_splits", f"not JSON: {error}") from None
    if not isinstance(splits, list) or not all(isinstance(split, str) for split in splits):
        raise _older_format(prepared, "test_splits", f"not a list of split names: {splits!r}")
    return tuple(splits)


def _metrics(prepared: PreparedFile) -> str:
    metrics = str(prepared._attr("metrics"))
    if metrics not in METRICS:
        raise _older_format(prepared, "metrics", f"one of {', '.join(METRICS)} expected, got {metrics!r}")
    return metrics


def open_prepared(path: str | Path) -> tuple[PreparedFile, DatasetInfo]:
    """A prepared file and what it records of its dataset (views, test splits, metrics): all a later
    stage needs, without importing `masktune.datasets` (whose registry imports every dataset's module)."""
    prepared = PreparedFile(path)
    return prepared, DatasetInfo.read(prepared)


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
            self.exif_orientation = str(f.attrs.get("exif_orientation", "ignore"))  # older files: ignore
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
                image = oriented(image, self.exif_orientation)
                # the file's path is read (one more HDF5 open) only for to_rgb's refusal message
                return to_rgb(image, self.source_path(i) if image.mode in NO_FIXED_RANGE else None)
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(f"{self.path}: image {i} of '{self.split}' ({self.source_path(i)}) cannot be "
                            f"decoded ({error}); rerun prepare") from None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}
