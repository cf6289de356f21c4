"""IN-9L (training) and the ImageNet-9 Backgrounds Challenge variants (testing), read from folders.

Layout (MadryLab/backgrounds_challenge README: the IN-9L training data `in9l.tar.gz` and the test
release `backgrounds_challenge_data.tar.gz`):

    train_root/train/<class folder>/*.JPEG       IN-9L training images
    train_root/val/<class folder>/*.JPEG         IN-9L's own validation images
    challenge_root/<variant>/val/<class folder>/*.JPEG   for each variant in `VARIANTS`

with the nine class folders `CLASS_FOLDERS` (`00_dog` ... `08_fish`; the label is the number
before the first underscore). The challenge release also has `fg_mask/` (foreground masks, not
images); it is not a test split.

Reference: aliasgharkhani/Masktune, src/datasets/in9l.py (`IN9L`): split `train` or `val` reads
`root/<split>`, any other split (a `--test_data_types` choice: `original`, `mixed_same`,
`mixed_rand`, `mixed_next`, `only_fg`, `no_fg`, `only_bg_b`, `only_bg_t`) reads
`root/test/<split>/val`; the label is `int(folder.split('_')[0])` and entries without a number are
skipped. src/methods/in9l_train.py trains on `train`, selects on `val` and tests every requested
variant. So: train = IN-9L `train/`, val = IN-9L `val/`, test_<variant> = `<variant>/val`. With the
official folder (`dataset_dir`), pass `train_root=dataset_dir`, `challenge_root=dataset_dir/test`.
We list each class folder's image files sorted by name (the official `glob` has no fixed order).
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from masktune.config.fields import FilePath, Int
from masktune.data.samples import ImageRecords
from masktune.data.views import CenterCrop, DatasetViews, Geometry, Resize, TrainTransform
from masktune.datasets.download import Source
from masktune.datasets.readers import IMAGE_EXTENSIONS, require_dir
from masktune.datasets.spec import DatasetSpec, PrepareConfig, dataset_folder, first_images
from masktune.errors import UserError

CLASS_FOLDERS = ("00_dog", "01_bird", "02_wheeled vehicle", "03_reptile", "04_carnivore", "05_insect",
                 "06_musical instrument", "07_primate", "08_fish")
CLASS_NAMES = tuple(folder.split("_", 1)[1] for folder in CLASS_FOLDERS)
NUM_CLASSES = len(CLASS_FOLDERS)
GROUP_NAMES = dict(enumerate(CLASS_NAMES))  # no spurious attribute: group = 2 * 0 + label
VARIANTS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg", "only_bg_b", "only_bg_t")
TEST_SPLITS = tuple(f"test_{variant}" for variant in VARIANTS)
_NUMBERED = re.compile(r"^(\d+)_")


def read_class_folders(split_dir: Path) -> ImageRecords:
    """Records of one split folder holding the nine class folders; paths relative to `split_dir`.

    The label is the number before the first underscore, as in the official code (so a folder
    named `02_wheeled_vehicle` would do too); entries without a leading number, hidden files and
    non-image files are skipped. UserError for a missing folder, a missing class number, a number
    outside 0-8 or given twice, or a class folder without images.
    """
    split_dir = require_dir(split_dir, "IN-9 split folder")
    found = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and _NUMBERED.match(entry.name))
    by_label: dict[int, str] = {}
    for folder in found:
        label = int(_NUMBERED.match(folder).group(1))
        if label >= NUM_CLASSES or label in by_label:
            raise UserError(f"{split_dir}: unexpected class folder {folder!r} "
                            f"(IN-9 has {', '.join(CLASS_FOLDERS)})")
        by_label[label] = folder
    missing = [CLASS_FOLDERS[label] for label in range(NUM_CLASSES) if label not in by_label]
    if missing:
        raise UserError(f"{split_dir}: missing class folder {missing[0]!r}"
                        f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} "
                        f"(found: {', '.join(found) or 'none'})")
    paths, labels = [], []
    for label, folder in sorted(by_label.items()):
        names = sorted(entry.name for entry in os.scandir(split_dir / folder)
                       if entry.is_file() and not entry.name.startswith(".")
                       and entry.name.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise UserError(f"{split_dir / folder}: class folder has no images")
        paths += [f"{folder}/{name}" for name in names]
        labels += [label] * len(names)
    return ImageRecords(split_dir, paths, labels, [0] * len(paths))


def read_in9l(train_root: str | Path, challenge_root: str | Path,
              variants: Sequence[str] = VARIANTS) -> dict[str, ImageRecords]:
    """`{"train", "val", "test_<variant>" for each variant}`; each split's `root` is its own folder.

    train/val: `train_root/train`, `train_root/val` (IN-9L); `test_<variant>`:
    `challenge_root/<variant>/val`. Labels 0-8 in `CLASS_FOLDERS` order; attributes all 0.
    """
    train_root = require_dir(Path(train_root), "IN-9L training folder")
    challenge_root = require_dir(Path(challenge_root), "Backgrounds Challenge folder")
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:
        raise UserError(f"IN-9: unknown test variant {unknown[0]!r} (known: {', '.join(VARIANTS)})")
    splits = {split: read_class_folders(train_root / split) for split in ("train", "val")}
    for variant in variants:
        if not (challenge_root / variant).is_dir():
            raise UserError(f"{challenge_root / variant}: Backgrounds Challenge variant folder not found "
                            f"(found: {', '.join(sorted(p.name for p in challenge_root.iterdir() if p.is_dir()))})")
        splits[f"test_{variant}"] = read_class_folders(challenge_root / variant / "val")
    return splits


MEAN = (0.4717, 0.4499, 0.3837)  # IN-9 normalisation (official src/methods/in9l_train.py)
STD = (0.2600, 0.2516, 0.2575)
TEST_VARIANTS = ("original", "mixed_same", "mixed_rand", "only_fg")  # the paper's Table 3 columns


def _prepare(config: PrepareConfig) -> dict[str, ImageRecords]:
    """`prepare.in9l.dir` holds `in9l/` (train, val) and `bg_challenge/` (the test variants), as the
    two official archives unpack."""
    root = dataset_folder(config, SOURCES, ("in9l/train", "bg_challenge/original/val"))
    return first_images(read_in9l(root / "in9l", root / "bg_challenge", variants=TEST_VARIANTS), config)


# MadryLab/backgrounds_challenge README.md: the test sets are the release asset (unpacks to bg_challenge/
# <variant>/val/<class>/, variants original, mixed_same, mixed_rand, only_fg, ...) and "Training Data"
# links IN-9L on Dropbox (unpacks to in9l/train and in9l/val); `dl=1` instead of the README's `dl=0` asks
# Dropbox for the file rather than its preview page. No checksums are published. MaskTune's
# src/datasets/in9l.py reads <root>/train, <root>/val and <root>/test/<variant>/val.
_SOURCE = {"param": "prepare.in9l.dir",
           "description": "ImageNet-9 backgrounds challenge and IN-9L (Xiao et al. 2021)"}
SOURCES = (
    Source(url="https://github.com/MadryLab/backgrounds_challenge/releases/download/data/"
               "backgrounds_challenge_data.tar.gz", filename="backgrounds_challenge_data.tar.gz", **_SOURCE),
    Source(url="https://www.dropbox.com/s/8w29bg9niya19rn/in9l.tar.gz?dl=1", filename="in9l.tar.gz", **_SOURCE),
)

PARAMS = {"dir": FilePath(nullable=True), "limit": Int(1, nullable=True)}  # prepare.in9l.*

SPEC = DatasetSpec(
    params=PARAMS,
    name="in9l", num_classes=NUM_CLASSES, group_names=lambda options: GROUP_NAMES,
    test_splits=tuple(f"test_{variant}" for variant in TEST_VARIANTS), prepare=_prepare, sources=SOURCES,
    metrics="background_challenge", class_names=CLASS_NAMES,
    # Official src/methods/in9l_train.py: transform_test is Resize(256) (short side) then CenterCrop(224);
    # transform_data_to_mask is Resize((224, 224)), a pure stretch.
    views=DatasetViews(
        masking=Geometry((Resize((224, 224)),)),
        evaluation=Geometry((Resize(256), CenterCrop(224))),
        # Official src/methods/in9l_train.py, transform_train (TRAIN_TRANSFORMS_IMAGENET + Normalize):
        # masktune.data.views.in9l_train.
        mean=MEAN, std=STD, train=TrainTransform("in9l", {"mean": MEAN, "std": STD}),
    ),
)
