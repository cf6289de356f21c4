"""Your own images: the `folder` dataset, read from an ImageFolder tree or a CSV index.

Two layouts, the two people already have (`prepare.folder.dir` or `prepare.folder.csv`, one of them):

- **ImageFolder** (torchvision's layout): `<dir>/<split>/<class>/<image>`, images possibly in nested
  folders under their class folder. Classes are the class folders of `train`, sorted by name, numbered
  from 0 (torchvision's `ImageFolder.find_classes`); each class folder is walked as torchvision's
  `make_dataset` walks it (`os.walk`, folders and files sorted by name), keeping the files whose
  extension Pillow reads (`IMAGE_EXTENSIONS`).
- **CSV** (one row per image, as `pandas.DataFrame.to_csv` writes it; extra columns are ignored):
  `path` (relative to the CSV's folder, or absolute), `label` (a class name, or an integer), `split`,
  and optionally `spurious` (a known spurious attribute) or `group` (a known group), used only to
  report group accuracies, never for training. Rows keep the file's order within a split.

Splits: `train`, `val`, and one or more test splits named `test` or `test_<anything>`. Classes are the
labels present in `train` (integers sorted numerically, names alphabetically); a label found only in
`val` or a test split is an error, since no method could learn it, and so is a class of `train` missing
from `val` (model selection and DFR need it there); a test split may lack classes. Class names (folder
names, CSV labels) and attribute values are read in Unicode's NFC form, and refused holding a control
character. `prepare.folder.limit` keeps at most that many images of each split, taken in turns from each
class (`_limited`), and the checks above run on what it keeps. Groups, as everywhere in this
project, are (label, attribute) pairs: group = attribute * classes + label, the attribute values
numbered in sorted order; a `group` column is used as the attribute. Without either column the groups
are the classes, and `evaluate` reports per-class accuracies instead of group ones (`groups_known`).

How the images are seen is chosen by `prepare.folder.transforms` (a named preset, `VIEW_PRESETS`),
`image_size` and `normalisation`, and recorded in the prepared file, which every later stage reads.
Where the view is deterministic and seen without normalisation (`transforms: none`, small images of
one size such as MNIST digits; or `transforms: resize`, as long as the largest split's resized pixels
fit `PIXEL_SPLIT_LIMIT_BYTES`) the images are decoded and resized once, here, and stored as pixels of
that view: exactly the built-in biased MNIST's form, so both go through the same code at the same
speed, and the later stages read the view as it is (`PLAIN`). The stored pixels are what torchvision's
`Resize` gives on the decoded image, so training, evaluation and saliency see the same tensors as
when every pass decoded and resized the file. Where the resize changes the training files' size, their
bytes are kept too: MaskTune's masks are put on each file as stored and the masked file resized again, as
the official code masks (masktune.data.splits.RemaskedViewSplit; masking the stored view instead cost
MaskTune 16 points of worst group on a folder of 32 x 32 images, issue 38).
Otherwise (a random train transform, `imagenet`; a normalisation; or pixels too large for memory) the
files' bytes are stored and decoded as they are read, like Waterbirds'. Every image is opened and
decoded while preparing, so a missing or unreadable file stops `prepare` with one line naming it, as does
one over 8192 x 8192 pixels, refused from its header (masktune.data.prepared.MAX_IMAGE_PIXELS). 16-bit
grey images keep the format's scale, x 255 / 65535; a split whose 16-bit images hold 12-bit values is
said in one line (`twelve_bit_note`)."""
from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from masktune.config.fields import Bool, Choice, FilePath, Int
from masktune.data.prepared import EXIF_ORIENTATIONS, TWELVE_BIT_PEAK
from masktune.data.samples import ImageRecords, SampleSet
from masktune.data.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PLAIN,
    CenterCrop,
    DatasetViews,
    Geometry,
    Resize,
    TrainTransform,
)
from masktune.datasets.readers import (
    IMAGE_EXTENSIONS,
    check_listed_files,
    image_size,
    load_rgb,
    read_csv_rows,
    require_dir,
    require_file,
)
from masktune.datasets.spec import DatasetSpec, PrepareConfig, per_class_turns
from masktune.errors import UserError

FIXED_SPLITS = ("train", "val")
CSV_COLUMNS = ("path", "label", "split")
ATTRIBUTE_COLUMNS = ("spurious", "group")
VIEW_PRESETS = ("none", "resize", "imagenet")
NORMALISATIONS = {"none": (None, None), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
# The largest split stored as pixels of its view: every stage reads a pixel split whole into memory
# (masktune.data.splits.PixelSplit), and DataLoader workers share it. 2 GiB: 900,000 RGB images of
# 28 x 28, 700,000 of 32 x 32, 14,000 of 224 x 224 (those stay files, decoded per pass).
PIXEL_SPLIT_LIMIT_BYTES = 2 << 30


def is_split_name(name: str) -> bool:
    """train, val, test or test_<name>."""
    return name in (*FIXED_SPLITS, "test") or (name.startswith("test_") and len(name) > len("test_"))


def _unknown_split(where: str, name: str) -> UserError:
    return UserError(f"{where}: unknown split {name!r} (splits are train, val, test and test_<name>)")


# ---------------------------------------------------------------------------------------------
# What the two layouts are read into


@dataclass(frozen=True)
class FolderSplits:
    """Per split, image paths relative to `root` with their class and attribute names (strings);
    `attribute_column` is the CSV column the attributes came from (None: no attribute known)."""

    root: Path
    where: str                                  # the folder or CSV, for messages
    paths: dict[str, list[str]]
    labels: dict[str, list[str]]
    attributes: dict[str, list[str]] | None
    attribute_column: str | None = None
    integer_labels: bool = False

    def class_names(self) -> tuple[str, ...]:
        names = set(self.labels["train"])
        return tuple(sorted(names, key=int) if self.integer_labels else sorted(names))

    def attribute_names(self) -> tuple[str, ...]:
        if self.attributes is None:
            return ("",)
        values = {value for split in self.attributes.values() for value in split}
        numeric = all(_is_int(v) for v in values)
        return tuple(sorted(values, key=int) if numeric else sorted(values))


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _clean_name(value: str, where: str, what: str) -> str:
    """A class or attribute name in Unicode's NFC form, so that one spelled composed (NFC, as most systems
    write it) and one decomposed (NFD, as macOS folder names come) are one class, not two that look alike.
    A control character (a NUL, a tab, an escape: Unicode category Cc) is refused: invisible in a listing,
    it makes another class."""
    control = next((char for char in value if unicodedata.category(char) == "Cc"), None)
    if control is not None:
        raise UserError(f"{where}: {what} {value!r} holds a control character, {control!r} (U+{ord(control):04X}): "
                        "remove it from the name")
    return unicodedata.normalize("NFC", value)


def _name_key(data: FolderSplits):
    """The order of `class_names`: integer labels numerically, names alphabetically."""
    return (lambda label: (int(label), label)) if data.integer_labels else (lambda label: label)


def _limited(data: FolderSplits, limit: int | None) -> FolderSplits:
    """At most `limit` images of each split, taken in turns from each class in the classes' order
    (masktune.datasets.spec.per_class_turns: every class keeps images, each in its own order), so that a
    quick run on a folder sorted by class still trains on every class; the split's checks follow, on what
    remains."""
    if limit is None:
        return data
    paths, labels = {}, {}
    attributes = None if data.attributes is None else {}
    for split, names in data.labels.items():
        order = {name: i for i, name in enumerate(sorted(set(names), key=_name_key(data)))}
        keep = per_class_turns([order[name] for name in names], limit, "prepare.folder.limit", split)
        paths[split] = [data.paths[split][i] for i in keep]
        labels[split] = [names[i] for i in keep]
        if attributes is not None:
            attributes[split] = [data.attributes[split][i] for i in keep]
    return replace(data, paths=paths, labels=labels, attributes=attributes)


def _check_splits(data: FolderSplits) -> None:
    """Each fixed split and at least one test split present and non-empty; at least two classes in train;
    no label unseen in train; every class of train in val (model selection, and DFR's last layer fitted on
    val, need each class: without one they failed late, in a later stage); integer labels that are distinct
    integers. A test split may lack a class."""
    for split in FIXED_SPLITS:
        if not data.paths.get(split):
            raise UserError(f"{data.where}: split {split!r} is empty (every dataset needs train, val and a test split)")
    tests = [s for s in data.paths if s not in FIXED_SPLITS]
    if not tests:
        raise UserError(f"{data.where}: no test split (name one `test` or `test_<name>`)")
    for split in tests:
        if not data.paths[split]:
            raise UserError(f"{data.where}: split {split!r} is empty")
    known = set(data.labels["train"])
    if len(known) < 2:
        raise UserError(f"{data.where}: 'train' has {len(known)} class ({', '.join(map(repr, sorted(known)))}): a "
                        "classifier needs at least 2")
    if data.integer_labels:
        as_int: dict[int, str] = {}
        for label in sorted({label for labels in data.labels.values() for label in labels}):
            other = as_int.setdefault(int(label), label)
            if other != label:
                raise UserError(f"{data.where}: labels {other!r} and {label!r} are the same integer; write each "
                                "class one way")
    for split, labels in data.labels.items():
        unseen = sorted(set(labels) - known)
        if unseen:
            raise UserError(f"{data.where}: label {unseen[0]!r} appears in {split!r} but not in 'train' "
                            f"(no method can learn a class it never sees)")
    in_val = set(data.labels["val"])
    missing = [name for name in data.class_names() if name not in in_val]
    if missing:
        raise UserError(f"{data.where}: split 'val' has no image of class {missing[0]!r} ({len(missing)} of "
                        f"{len(known)} classes of 'train' missing): model selection and DFR's last layer need "
                        "every class in val; add some of its images")


# ---------------------------------------------------------------------------------------------
# ImageFolder layout


def _class_images(class_dir: Path) -> list[str]:
    """Image files under `class_dir`, relative to it, in torchvision's `make_dataset` order (the walk
    sorted by folder path, each folder's files by name); hidden files (macOS `._x.jpg`) are skipped.
    Links are followed, as torchvision follows them, but each folder once, and never into the split
    folder, another class's folder or above them (a cycle): those would list images twice, under the
    wrong class or without end, and are refused with one line naming the link."""
    base, split, seen, walked = class_dir.resolve(), class_dir.parent.resolve(), set(), []
    for folder, subfolders, files in os.walk(class_dir, followlinks=True):
        real = Path(folder).resolve()
        inside_class = real == base or base in real.parents
        if not inside_class and (real == split or split in real.parents or real in split.parents):
            raise UserError(f"{folder}: a link to {real}, the split folder, another class's folder or above them: "
                            "its images would be listed under another class (or without end, a link cycle); "
                            "remove the link")
        if real in seen or real in base.parents:
            raise UserError(f"{folder}: the folder {real} reached a second time through a link: its images would "
                            "be listed twice (or without end); remove the link")
        seen.add(real)
        walked.append((folder, sorted(files)))
        subfolders.sort()
    found = []
    for folder, files in sorted(walked):
        relative = Path(folder).relative_to(class_dir)
        found += [(relative / name).as_posix() for name in files
                  if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def read_image_folder(root: str | Path, limit: int | None = None) -> FolderSplits:
    """`root/<split>/<class>/.../<image>`: every split folder, its class folders and their images (at most
    `limit` of each split, `_limited`); a class is its folder's name in NFC (`_clean_name`)."""
    root = require_dir(Path(root), "image folder (prepare.folder.dir)")
    split_dirs = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    for name in split_dirs:
        if not is_split_name(name):
            raise _unknown_split(str(root / name), name)
    for name in FIXED_SPLITS:
        if name not in split_dirs:
            raise UserError(f"{root}: no {name!r} folder (found: {', '.join(split_dirs) or 'none'}); the layout is "
                            "<dir>/<split>/<class>/<image> with splits train, val and test or test_<name>")
    paths, labels = {}, {}
    for split in [*FIXED_SPLITS, *(s for s in split_dirs if s not in FIXED_SPLITS)]:
        folders = sorted(e.name for e in os.scandir(root / split) if e.is_dir())
        hidden = [name for name in folders if name.startswith(".")]
        if hidden:
            print(f"{root / split}: skipped hidden folder(s) {', '.join(hidden)} (a class folder's name must not "
                  "start with '.')")
        classes = [name for name in folders if not name.startswith(".")]
        paths[split], labels[split] = [], []
        for name in classes:
            images = _class_images(root / split / name)
            if not images:
                raise UserError(f"{root / split / name}: class folder has no images "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
            paths[split] += [f"{split}/{name}/{image}" for image in images]
            labels[split] += [_clean_name(name, str(root / split), "class folder")] * len(images)
    data = _limited(FolderSplits(root, str(root), paths, labels, None), limit)
    _check_splits(data)
    return data


# ---------------------------------------------------------------------------------------------
# CSV layout


def read_csv_index(csv_path: str | Path, limit: int | None = None) -> FolderSplits:
    """One row per image: path (relative to the CSV's folder), label, split, [spurious | group] (at most
    `limit` rows of each split, `_limited`); labels and attribute values in NFC (`_clean_name`)."""
    csv_path = require_file(Path(csv_path), "image index CSV (prepare.folder.csv)")
    header, rows = read_csv_rows(csv_path, CSV_COLUMNS, ATTRIBUTE_COLUMNS)
    if not rows:
        raise UserError(f"{csv_path}: no rows after the header")
    present = [c for c in ATTRIBUTE_COLUMNS if c in header]
    if len(present) > 1:
        raise UserError(f"{csv_path}: both a 'spurious' and a 'group' column: keep one (both mean the "
                        "attribute the groups are made of)")
    column = present[0] if present else None
    paths: dict[str, list[str]] = {}
    labels: dict[str, list[str]] = {}
    attributes: dict[str, list[str]] | None = {} if column else None
    lines: list[int] = []
    for line, row in rows:
        split = row["split"]
        if not is_split_name(split):
            raise _unknown_split(f"{csv_path}: line {line}", split)
        for name in ("path", "label") + ((column,) if column else ()):
            if not row[name]:
                raise UserError(f"{csv_path}: line {line}: empty {name!r}")
        paths.setdefault(split, []).append(row["path"])
        labels.setdefault(split, []).append(_clean_name(row["label"], f"{csv_path}: line {line}", "label"))
        if attributes is not None:
            attributes.setdefault(split, []).append(_clean_name(row[column], f"{csv_path}: line {line}", column))
        lines.append(line)
    all_labels = [label for split in labels.values() for label in split]
    data = FolderSplits(csv_path.parent, str(csv_path), paths, labels, attributes, column,
                        integer_labels=all(_is_int(label) for label in all_labels))
    data = _limited(data, limit)
    _check_splits(data)
    check_listed_files(csv_path.parent, [p for split in paths.values() for p in split],
                       [line for split in paths for line in _split_lines(rows, split)], csv_path)
    return data


def _split_lines(rows: Sequence[tuple[int, dict]], split: str) -> list[int]:
    return [line for line, row in rows if row["split"] == split]


# ---------------------------------------------------------------------------------------------
# From names to the project's records


def to_records(data: FolderSplits) -> dict[str, ImageRecords]:
    """Per split, the images with class ids (the order of `class_names`) and attribute ids."""
    classes = {name: i for i, name in enumerate(data.class_names())}
    values = {name: i for i, name in enumerate(data.attribute_names())}
    records = {}
    for split, paths in data.paths.items():
        attributes = [0] * len(paths) if data.attributes is None else [values[a] for a in data.attributes[split]]
        records[split] = ImageRecords(data.root, paths, [classes[label] for label in data.labels[split]],
                                      attributes, num_classes=len(classes))
    return records


def group_names(data: FolderSplits) -> dict[int, str]:
    """Group id -> name: the class name without an attribute; `<class>, <column>=<value>` with one."""
    classes, values = data.class_names(), data.attribute_names()
    if data.attributes is None:
        return dict(enumerate(classes))
    return {a * len(classes) + c: f"{name}, {data.attribute_column}={value}"
            for a, value in enumerate(values) for c, name in enumerate(classes)}


def decode_pixels(records: ImageRecords, desc: str, exif_orientation: str = "ignore",
                  geometry: Geometry | None = None, keep_files: bool = False,
                  peaks: list[int] | None = None) -> SampleSet:
    """Every image decoded to RGB uint8 and, with a `geometry`, seen through it (torchvision's transforms on
    the decoded PIL image, as an image file read per pass is), all of one size. With `keep_files`, the
    records go with the pixels when the view changed some image's size (`SampleSet.files`: MaskTune masks
    the files as stored); where every file already has the view's size the view is the file, and nothing
    more is kept. 16-bit grey images' largest values go to `peaks`, where given (`twelve_bit_note`)."""
    from PIL import Image
    from torchvision.transforms import Compose

    view = None if geometry is None or geometry == Geometry() else Compose(geometry.transforms())
    images, first, resized = [], None, False
    for i in tqdm(range(len(records)), desc=desc, unit="image", disable=None, mininterval=1.0):
        image = load_rgb(records.path(i), exif_orientation, peaks)
        if view is not None:
            raw_size = image.shape[:2]
            image = np.asarray(view(Image.fromarray(image)), dtype=np.uint8)
            resized = resized or image.shape[:2] != raw_size
        if first is None:
            first = (image.shape, records.paths[i])
        elif image.shape != first[0]:
            raise UserError(f"{records.path(i)}: image is {image.shape[0]}x{image.shape[1]}, but "
                            f"{first[1]} is {first[0][0]}x{first[0][1]}: with prepare.folder.transforms none "
                            "every image must have one size (use resize or imagenet to resize them)")
        images.append(image)
    return SampleSet(np.stack(images), records.labels, records.attributes, records.source_index, records.num_classes,
                     files=records if keep_files and resized else None)


def _scan_files(records: ImageRecords, exif_orientation: str = "ignore", one_size: bool = False) -> list[int]:
    """A split kept as files (decoded per pass), read here from the headers: every image within the pixel
    limit (masktune.data.prepared.open_image) and, with `one_size` (no resize), all of one size: images of
    several sizes cannot form a batch, said before any training. Returns the largest value of each 16-bit
    grey image, decoded for it (`twelve_bit_note`)."""
    sizes, peaks = {}, []
    for i in range(len(records)):
        size = image_size(records.path(i), exif_orientation, peaks)
        if one_size:
            sizes.setdefault(size, records.paths[i])
        if len(sizes) > 1:
            (a, first), (b, other) = sizes.items()
            raise UserError(f"{records.root / other}: image is {b[0]}x{b[1]}, but {first} is {a[0]}x{a[1]}: with "
                            "prepare.folder.transforms none every image must have one size (use resize or imagenet)")
    return peaks


def twelve_bit_note(where: str, split: str, peaks: Sequence[int]) -> None:
    """One line for a split whose 16-bit grey images hold 12-bit data (largest value at most 4095, as many
    X-ray and microscopy exports write it): `to_rgb` keeps the 16-bit format's scale (masktune.data.prepared
    says why), so they span a sixteenth of the 8-bit grey levels. Said once per split, not per image."""
    narrow = [peak for peak in peaks if peak <= TWELVE_BIT_PEAK]
    if narrow:
        top = max(narrow)
        print(f"{where}: {len(narrow)} of the {len(peaks)} 16-bit greyscale images of {split!r} use at most 12 bits "
              f"(largest value {top} of 65535); kept at the 16-bit scale, x 255 / 65535, they span at most "
              f"{round(top * 255 / 65535) + 1} of the 256 grey levels: to use them all, rescale the files to the "
              "16-bit range (e.g. x 16)")


# ---------------------------------------------------------------------------------------------
# Views: named presets


def view_preset(transforms: str, image_size_: int, normalisation: str) -> DatasetViews:
    """The views of a preset: `none` (the images as they are, `ToTensor` only: small images of one
    size), `resize` (stretched to image_size x image_size, no augmentation), `imagenet` (the Waterbirds
    recipe's: eval and masking resize to image_size * 256/224 and centre-crop image_size; training
    random-resized crops of scale 0.7-1 and ratio 3/4-4/3, and horizontal flips)."""
    if transforms not in VIEW_PRESETS:
        raise UserError(f"params.yaml: prepare.folder.transforms must be one of {', '.join(VIEW_PRESETS)}, "
                        f"got {transforms!r}")
    mean, std = NORMALISATIONS[normalisation]
    if transforms == "none":
        return PLAIN if mean is None else DatasetViews(Geometry(), Geometry(), mean, std)
    if transforms == "resize":
        geometry = Geometry((Resize((image_size_, image_size_)),))
        return DatasetViews(geometry, geometry, mean, std)
    resized = int(image_size_ * 256 / 224)
    geometry = Geometry((Resize((resized, resized)), CenterCrop((image_size_, image_size_))))
    train = TrainTransform("crop_flip", {"ratio": (0.75, 1.3333333333333333), "mean": mean, "std": std,
                                         "size": image_size_})
    return DatasetViews(geometry, geometry, mean, std, train=train)


def _views(options: Mapping) -> DatasetViews:
    return view_preset(options["transforms"], options["image_size"], options["normalisation"])


def stores_view_pixels(options: Mapping, split_sizes: Sequence[int], limit: int = PIXEL_SPLIT_LIMIT_BYTES) -> bool:
    """Whether `prepare` stores the images as pixels of their view (module docstring): a deterministic
    view (`none`, or `resize` when the largest of `split_sizes` fits `limit` bytes of pixels), no
    normalisation."""
    views = _views(options)
    if views.train is not None or views.mean is not None or views.masking != views.evaluation:
        return False
    if options["transforms"] == "none":
        return True
    return max(split_sizes) * options["image_size"] ** 2 * 3 <= limit


def read_folder_dataset(options: Mapping) -> FolderSplits:
    """The layout the params name: exactly one of prepare.folder.dir and prepare.folder.csv; its files
    checked for repeats (`check_repeats`)."""
    folder, index = options["dir"], options["csv"]
    if folder is not None and index is not None:  # e.g. the CSV example, then the folder one: both stay set
        raise UserError(f"params.yaml: prepare.folder.dir ({folder}) and prepare.folder.csv ({index}) are both "
                        "set; keep one: add `-S prepare.folder.csv=null` to read the folder, or "
                        "`-S prepare.folder.dir=null` to read the CSV")
    if folder is None and index is None:
        raise UserError("params.yaml: set exactly one of prepare.folder.dir (an ImageFolder tree) and "
                        "prepare.folder.csv (a CSV index), e.g. `dvc exp run -S prepare.folder.dir=path/to/images`")
    limit = options.get("limit")
    data = read_image_folder(folder, limit) if folder is not None else read_csv_index(index, limit)
    check_repeats(data, options.get("allow_overlap", False))
    return data


def check_repeats(data: FolderSplits, allow_overlap: bool = False) -> None:
    """One file (after links) listed more than once: under two classes, refused (one of them mislabels
    it); in two splits, refused unless `allow_overlap` (a test image seen in training inflates its
    accuracy); twice within a split, said in one line (each copy counts, as it would in torchvision)."""
    listed: dict[str, list[tuple[str, str]]] = {}
    for split, paths in data.paths.items():
        for path, label in zip(paths, data.labels[split]):
            listed.setdefault(os.path.realpath(data.root / path), []).append((split, label))
    repeats = {real: uses for real, uses in listed.items() if len(uses) > 1}
    for real, uses in repeats.items():
        labels = sorted({label for _, label in uses})
        if len(labels) > 1:
            raise UserError(f"{data.where}: {real} is listed as class {labels[0]!r} and as {labels[1]!r}: give each "
                            "file one class")
    overlap: dict[tuple[str, ...], list[str]] = {}
    within = []
    for real, uses in repeats.items():
        splits = tuple(sorted({split for split, _ in uses}))
        if len(splits) > 1:
            overlap.setdefault(splits, []).append(real)
        if len(uses) > len(splits):
            within.append(real)
    if overlap:
        pairs = "; ".join(f"{len(files)} in {' and '.join(splits)} (e.g. {files[0]})" for splits, files in overlap.items())
        if not allow_overlap:
            raise UserError(f"{data.where}: files listed in two splits: {pairs}; remove them from one split, or set "
                            "prepare.folder.allow_overlap: true")
        print(f"{data.where}: files listed in two splits (allowed by prepare.folder.allow_overlap): {pairs}")
    if within:
        print(f"{data.where}: {len(within)} file(s) listed more than once within a split, each copy counted "
              f"(e.g. {within[0]})")


_LAST_READ: dict = {}  # the config of the last `_read` and its folder


def _read(config: PrepareConfig) -> FolderSplits:
    """The folder `config` names, read once per prepare run: `stages.prepare` asks one config for the file
    attributes (`_describe`), then for the splits (`_prepare`), and a read says what it skipped or
    accepted (hidden folders, repeated files): read twice, every such line was printed twice. Keyed by the
    config object itself, so that another config (another run, a test) reads the folder afresh."""
    if _LAST_READ.get("config") is not config:
        _LAST_READ.clear()
        _LAST_READ.update(config=config, data=read_folder_dataset(config.options))
    return _LAST_READ["data"]


def _stores_view_pixels(config: PrepareConfig, data: FolderSplits) -> bool:
    return stores_view_pixels(config.options, [len(paths) for paths in data.paths.values()])


def _prepare(config: PrepareConfig) -> dict[str, SampleSet | ImageRecords]:
    data = _read(config)
    exif_orientation = config.options["exif_orientation"]
    as_pixels = _stores_view_pixels(config, data)
    geometry = _views(config.options).evaluation
    splits: dict[str, SampleSet | ImageRecords] = {}
    for split, records in to_records(data).items():
        peaks: list[int] = []
        if as_pixels:
            splits[split] = decode_pixels(records, f"prepare {split}", exif_orientation, geometry,
                                          keep_files=split == "train", peaks=peaks)
        else:
            peaks = _scan_files(records, exif_orientation, one_size=config.options["transforms"] == "none")
            splits[split] = records
        twelve_bit_note(data.where, split, peaks)
    return splits


def _describe(config: PrepareConfig) -> dict:
    """What the later stages need to know of this folder, in the format of every dataset's file
    attributes (`DatasetSpec.file_attributes`): its classes, groups, test splits, and the views its
    preset gives (the spec's own are a placeholder: a folder's views exist only once its params do)."""
    data = _read(config)
    stored_view = _stores_view_pixels(config, data)
    return {"num_classes": len(data.class_names()), "class_names": json.dumps(data.class_names()),
            "group_names": json.dumps(group_names(data)), "groups_known": data.attributes is not None,
            "test_splits": json.dumps([s for s in data.paths if s not in FIXED_SPLITS]),
            "views": (PLAIN if stored_view else _views(config.options)).to_json(),
            "stored_view": json.dumps(_views(config.options).evaluation.as_json_value()) if stored_view else "",
            "exif_orientation": config.options["exif_orientation"]}


PARAMS = {  # prepare.folder.*
    "dir": FilePath(nullable=True),
    "csv": FilePath(nullable=True),
    "transforms": Choice(options=VIEW_PRESETS),
    "image_size": Int(8, 4096),
    "normalisation": Choice(options=tuple(NORMALISATIONS)),
    "limit": Int(1, nullable=True),
    "allow_overlap": Bool(),
    "exif_orientation": Choice(options=EXIF_ORIENTATIONS),
}

SPEC = DatasetSpec(params=PARAMS, name="folder", num_classes=0, group_names=lambda options: {}, test_splits=(), prepare=_prepare,
                   views=PLAIN, describe=_describe)
