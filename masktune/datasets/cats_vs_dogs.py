"""Cats vs Dogs read from the Kaggle "Dogs vs. Cats" training folder: `cat.<id>.jpg` and `dog.<id>.jpg`.

The official code (aliasgharkhani/Masktune src/datasets/catsvsdogs.py, src/methods/catsvsdogs_train.py)
reads the 25,000 labelled images of Kaggle's `train/` folder (`--dataset_dir`, bash_files/catsvsdogs_masktune.sh
L21; Kaggle requires a login, so there is no `download`: set `prepare.cats_vs_dogs.dir`):
- label 0 for `cat.<id>.<ext>`, 1 for `dog.<id>.<ext>` (catsvsdogs.py L56-58; here a file named otherwise is
  ignored, where the official code would call it a dog);
- test split: the ids listed in `cat_idx.txt` and `dog_idx.txt` (one `<id>.<ext>` a line), taken in pairs
  (`zip`, so as many cats as dogs) and moved out of the training folder (L36-52). Those two files are not
  published. When they lie in the images' folder (where the official code reads them: `<root>/raw`, the
  `--dataset_dir` of the bash file) they are used as the official code uses them; otherwise, a documented
  substitute: `prepare.cats_vs_dogs.test_per_class` ids of each class drawn without replacement by
  `np.random.default_rng(test_seed)` (cats first, then dogs). The default 2,500 of each class (a 20,000 /
  5,000 split) is an assumption, not an official number;
- train and val: the other images, by the official 20% draw with seed 50 (catsvsdogs_train.py L31-43;
  masktune/datasets/official_val.py), over the cats then the dogs, each in id order;
- every image is resized to 64 x 64 as it is read, `Image.open(path).resize(size=(64, 64))` (L100, L107):
  Pillow's default filter, bicubic, a stretch. Here that is done once, in `prepare` (the image converted to
  RGB first), and the 64 x 64 pixels are stored; ToTensor only, no normalisation (catsvsdogs_train.py L17-18
  transform_test, L24-25 transform_data_to_mask); train view: RandomHorizontalFlip, RandomAffine(15,
  translate (0.1, 0.1)), ToTensor (L19-23). The official finetune re-reads its masked copy of the full-size
  JPEG (the 64 x 64 mask stretched over it, src/utils/data_save_load.py L12-19) and resizes it again; here
  the mask is applied to the stored 64 x 64 image.
- no spurious attribute: the groups are the classes (`groups_known` False); `source_index` is the image's
  position in the full listing (all cats by id, then all dogs by id).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from masktune.config.fields import FilePath, Int, Number
from masktune.data.prepared import IMAGE_ERRORS, unreadable_image
from masktune.data.samples import SampleSet
from masktune.data.views import DatasetViews, Geometry, TrainTransform
from masktune.datasets.official_val import official_validation
from masktune.datasets.spec import DatasetSpec, PrepareConfig
from masktune.errors import UserError

PARAM = "prepare.cats_vs_dogs.dir"
CLASS_NAMES = ("cat", "dog")
SIZE = 64
TEST_LISTS = ("cat_idx.txt", "dog_idx.txt")
_NAME = re.compile(r"^(cat|dog)\.(\d+)\.([A-Za-z]+)$")


def list_images(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """File names, labels and ids of the `cat.<id>.<ext>` / `dog.<id>.<ext>` files of `folder`: the cats by
    id, then the dogs by id."""
    if not folder.is_dir():
        raise UserError(f"{PARAM}: {folder} is not a folder: set it to Kaggle's Dogs vs. Cats train/ folder "
                        f"(cat.<id>.jpg, dog.<id>.jpg)")
    found = []
    for name in os.listdir(folder):
        match = _NAME.match(name)
        if match:
            found.append((CLASS_NAMES.index(match.group(1)), int(match.group(2)), name))
    if not found:
        raise UserError(f"{folder}: no cat.<id>.jpg or dog.<id>.jpg images; set {PARAM} to Kaggle's Dogs vs. "
                        f"Cats train/ folder")
    found.sort()
    labels, ids, names = zip(*found)
    return list(names), np.array(labels, dtype=np.int64), np.array(ids, dtype=np.int64)


def read_test_list(path: Path) -> list[int]:
    """The ids of an official `cat_idx.txt` / `dog_idx.txt`: one `<id>.<ext>` a line."""
    ids = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.strip().split(".")
        if not line.strip():
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise UserError(f"{path}: line {line_number}: expected <id>.<extension> (e.g. 1234.jpg), got "
                            f"{line.strip()!r}")
        ids.append(int(parts[0]))
    return ids


def held_out_rows(folder: Path, labels: np.ndarray, ids: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Rows of the listing that form the test split: the official lists when `folder` has both, else the
    seeded substitute (module docstring)."""
    lists = [folder / name for name in TEST_LISTS]
    if all(path.is_file() for path in lists):
        cats, dogs = (read_test_list(path) for path in lists)
        pairs = min(len(cats), len(dogs))  # the official loop zips the two lists
        rows = []
        for label, chosen, path in ((0, cats[:pairs], lists[0]), (1, dogs[:pairs], lists[1])):
            where = {int(i): row for row, i in zip(np.flatnonzero(labels == label), ids[labels == label])}
            missing = [i for i in chosen if i not in where]
            if missing:
                raise UserError(f"{path}: id {missing[0]} has no {CLASS_NAMES[label]}.{missing[0]}.* image in "
                                f"{folder} ({len(missing)} listed ids are missing)")
            rows += [where[i] for i in chosen]
        return np.sort(np.array(rows, dtype=np.int64))
    rng = np.random.default_rng(seed)
    rows = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        if not 0 < per_class < len(members):
            raise UserError(f"params.yaml: prepare.cats_vs_dogs.test_per_class must be between 1 and "
                            f"{len(members) - 1} ({folder} has {len(members)} {CLASS_NAMES[label]} images), "
                            f"got {per_class}")
        rows.append(np.sort(rng.choice(members, size=per_class, replace=False)))
    return np.concatenate(rows)


def load_resized(path: Path) -> np.ndarray:
    """uint8 (64, 64, 3): the image as the official code reads it, `Image.open(path).resize((64, 64))`
    (Pillow's default filter for RGB, bicubic), after converting it to RGB."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            return np.asarray(rgb.resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.uint8)
    except IMAGE_ERRORS as error:
        raise unreadable_image(path, error) from None


def _split(folder: Path, names: list[str], labels: np.ndarray, rows: np.ndarray, desc: str) -> SampleSet:
    images = np.empty((len(rows), SIZE, SIZE, 3), dtype=np.uint8)
    for k, row in enumerate(tqdm(rows, desc=desc, unit="image", disable=None)):
        images[k] = load_resized(folder / names[row])
    split_labels = labels[rows]
    return SampleSet(images, split_labels, np.zeros_like(split_labels), rows.astype(np.int64), num_classes=2)


def build_cats_vs_dogs(folder: str | Path, *, test_per_class: int, test_seed: int, val_fraction: float,
                       val_seed: int, limit: int | None = None) -> dict[str, SampleSet]:
    """train / val / test of the Kaggle folder (only the first `limit` images of each class in each split,
    when given)."""
    folder = Path(folder)
    names, labels, ids = list_images(folder)
    test = held_out_rows(folder, labels, ids, test_per_class, test_seed)
    rest = np.setdiff1d(np.arange(len(names)), test)  # still cats then dogs, by id: the official listing
    train, val = official_validation(labels[rest], val_fraction, val_seed, "prepare.cats_vs_dogs")
    splits = {"train": rest[train], "val": rest[val], "test": test}
    return {name: _split(folder, names, labels, first_of_each_class(rows, labels, limit), f"prepare {name}")
            for name, rows in splits.items()}


def first_of_each_class(rows: np.ndarray, labels: np.ndarray, limit: int | None) -> np.ndarray:
    """The first `limit` rows of each class (all with None), in their order: quick runs keep both classes."""
    if limit is None:
        return rows
    keep = np.zeros(len(rows), dtype=bool)
    for label in (0, 1):
        keep[np.flatnonzero(labels[rows] == label)[:limit]] = True
    return rows[keep]


def _prepare(config: PrepareConfig) -> dict[str, SampleSet]:
    options = config.options
    if options["dir"] is None:
        raise UserError(f"Cats vs Dogs needs a Kaggle login to download: set {PARAM} to the train/ folder of "
                        f"Kaggle's Dogs vs. Cats (cat.<id>.jpg, dog.<id>.jpg)")
    return build_cats_vs_dogs(options["dir"], test_per_class=options["test_per_class"], test_seed=options["test_seed"],
                              val_fraction=options["val_fraction"], val_seed=options["val_seed"],
                              limit=options["limit"])


# Official src/methods/catsvsdogs_train.py L17-25: the 64 x 64 images, ToTensor only to evaluate and to mask,
# CIFAR-10's flips and affine shifts to train.
VIEWS = DatasetViews(masking=Geometry(), evaluation=Geometry(), train=TrainTransform("flip_affine"))

PARAMS = {  # prepare.cats_vs_dogs.*
    "dir": FilePath(nullable=True),
    "test_per_class": Int(1),
    "test_seed": Int(0),
    "val_fraction": Number(0.0, 1.0, exclusive_minimum=True),
    "val_seed": Int(0, 2**32 - 1),
    "limit": Int(1, nullable=True),
}

SPEC = DatasetSpec(params=PARAMS, name="cats_vs_dogs", num_classes=2, group_names=lambda options: dict(enumerate(CLASS_NAMES)),
                   test_splits=("test",), prepare=_prepare, views=VIEWS, class_names=CLASS_NAMES, groups_known=False)
