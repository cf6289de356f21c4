"""CelebA read from its folder, as the Kaggle archive or the original txt files unpack it.

Files (in `root`):
- attributes: `list_attr_celeba.csv` (Kaggle: header `image_id,5_o_Clock_Shadow,...`, values
  -1/1) or `list_attr_celeba.txt` (original: line 1 the image count, line 2 the 40 attribute
  names, then `000001.jpg -1  1 ...` whitespace-separated); the CSV is used when both exist;
- partition: `list_eval_partition.csv` (header `image_id,partition`) or `list_eval_partition.txt`
  (`000001.jpg 0`); 0/1/2 = train/val/test;
- images: `img_align_celeba/*.jpg`, or `img_align_celeba/img_align_celeba/*.jpg` as the Kaggle
  zip nests them (the nested folder wins when it exists).

Reference: aliasgharkhani/Masktune, src/datasets/celebA.py (`CelebADataset`): it reads
`list_attr_celeba.csv` and `list_eval_partition.csv` with pandas, maps -1 to 0, takes the label
from `attr_name='Blond_Hair'` and the confounder from `confounder_names='Male'`, pairs the rows of
the two files by position and splits by `{0: 'train', 1: 'val', 2: 'test'}`;
src/methods/celebA_train.py scores group `2 * confounder + label`. We follow that, but pair the two
files by `image_id` (an error, not a silent shift, if the partition lacks an image) and keep the
attribute file's row order.
"""
from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

from masktune.config.fields import FilePath, Int, Text
from masktune.data.samples import ImageRecords
from masktune.data.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    DatasetViews,
    Geometry,
    Resize,
    TrainTransform,
)
from masktune.datasets.download import Source, drive_url
from masktune.datasets.readers import (
    check_listed_files,
    parse_code,
    require_dir,
    unknown_name,
)
from masktune.datasets.spec import DatasetSpec, PrepareConfig, dataset_folder, first_images
from masktune.errors import UserError

NUM_CLASSES = 2
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
GROUP_NAMES = {0: "not_blond_female", 1: "blond_female", 2: "not_blond_male", 3: "blond_male"}
SPLITS = ("train", "val", "test")
PARTITION_CODES = {"0": 0, "1": 1, "2": 2}
ATTRIBUTE_VALUES = {"-1": 0, "1": 1}
IMAGE_FOLDER = "img_align_celeba"


def group_names(target: str = "Blond_Hair", spurious: str = "Male") -> dict[int, str]:
    """Names of groups 2 * spurious + target: `GROUP_NAMES` for the defaults, generic otherwise."""
    if (target, spurious) == ("Blond_Hair", "Male"):
        return dict(GROUP_NAMES)
    t, s = target.lower(), spurious.lower()
    return {0: f"not_{t}_not_{s}", 1: f"{t}_not_{s}", 2: f"not_{t}_{s}", 3: f"{t}_{s}"}


def _pick(root: Path, stem: str) -> Path:
    for suffix in (".csv", ".txt"):
        if (root / f"{stem}{suffix}").is_file():
            return root / f"{stem}{suffix}"
    raise UserError(f"{root / (stem + '.csv')}: CelebA file not found (nor {stem}.txt)")


def image_folder(root: Path) -> Path:
    """`img_align_celeba/img_align_celeba` (Kaggle zip) if it exists, else `img_align_celeba`."""
    nested = root / IMAGE_FOLDER / IMAGE_FOLDER
    return nested if nested.is_dir() else require_dir(root / IMAGE_FOLDER, "CelebA image folder")


@contextlib.contextmanager
def _open_table(path: Path) -> Iterator[tuple[list[str], int | None, Iterator[tuple[int, list[str]]]]]:
    """Column names (without the image column), the stated image count and (line, fields) rows.

    CSV files have a header starting with `image_id`. The attribute txt file starts with the image
    count and the attribute names; the partition txt file has no header (names `["partition"]`).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            count = None
            if path.suffix == ".csv":
                reader = csv.reader(handle)
                header = [name.strip() for name in next(reader, [])]
                if header[:1] != ["image_id"]:
                    raise UserError(f"{path}: missing column 'image_id' as the first column "
                                    f"(found: {', '.join(header) or 'an empty file'})")
                rows = ((reader.line_num, [cell.strip() for cell in row])
                        for row in reader if any(cell.strip() for cell in row))
                yield header[1:], count, rows
                return
            lines = enumerate(handle, start=1)
            header = ["partition"]
            if path.stem == "list_attr_celeba":
                first = next(lines, (1, ""))[1].split()
                header = next(lines, (2, ""))[1].split()
                if len(first) != 1 or not first[0].isdigit() or not header:
                    raise UserError(f"{path}: expected the image count on line 1 and the attribute names on line 2")
                count = int(first[0])
            yield header, count, ((number, line.split()) for number, line in lines if line.strip())
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: not a readable text table ({error})") from None


def _read_partition(path: Path) -> dict[str, int]:
    partition = {}
    with _open_table(path) as (columns, _, rows):
        if "partition" not in columns:
            raise UserError(f"{path}: missing column 'partition' (found: image_id, {', '.join(columns)})")
        at = columns.index("partition") + 1
        for line, row in rows:
            if len(row) != len(columns) + 1:
                raise UserError(f"{path}: line {line}: {len(row)} fields, expected {len(columns) + 1}")
            partition[row[0]] = parse_code(row[at], PARTITION_CODES, path, line, "partition",
                                           "0, 1 or 2 (train/val/test)")
    return partition


def read_celeba(root: str | Path, target: str = "Blond_Hair", spurious: str = "Male") -> dict[str, ImageRecords]:
    """`{"train", "val", "test"}` records: labels = `target`, attributes = `spurious`, both 0/1 from -1/1.

    UserError (naming the file) for a missing folder or file, an unknown attribute name (listing
    the close ones), a value other than -1/1 in the two attributes used or a partition other than
    0/1/2 (naming the line), a row with the wrong number of fields, an image without a partition,
    an empty split and an image listed but not found. Images are not decoded here.
    """
    root = require_dir(Path(root), "CelebA folder")
    if target == spurious:
        raise UserError(f"CelebA: the target and the spurious attribute must differ, both are {target!r}")
    attr_path, partition_path = _pick(root, "list_attr_celeba"), _pick(root, "list_eval_partition")
    partition = _read_partition(partition_path)
    folder = image_folder(root)
    prefix = folder.relative_to(root).as_posix()
    by_split: dict[int, list] = {0: [], 1: [], 2: []}
    image_ids, lines = [], []
    with _open_table(attr_path) as (names, expected_count, rows):
        for name in (target, spurious):
            if name not in names:
                raise unknown_name(attr_path, "attribute", name, names)
        t, s = names.index(target) + 1, names.index(spurious) + 1
        for row_index, (line, row) in enumerate(rows):
            if len(row) != len(names) + 1:
                raise UserError(f"{attr_path}: line {line}: {len(row)} fields, expected {len(names) + 1} "
                                f"(the image and {len(names)} attributes)")
            image_id = row[0]
            if image_id not in partition:
                raise UserError(f"{partition_path}: no partition for image {image_id!r} "
                                f"(listed in {attr_path.name} line {line})")
            label = parse_code(row[t], ATTRIBUTE_VALUES, attr_path, line, target, "-1 or 1")
            attribute = parse_code(row[s], ATTRIBUTE_VALUES, attr_path, line, spurious, "-1 or 1")
            by_split[partition[image_id]].append((f"{prefix}/{image_id}", label, attribute, row_index))
            image_ids.append(image_id)
            lines.append(line)
    if expected_count is not None and expected_count != len(image_ids):
        raise UserError(f"{attr_path}: line 1 says {expected_count} images, the file lists {len(image_ids)} "
                        f"(truncated?)")
    for code, split in enumerate(SPLITS):
        if not by_split[code]:
            raise UserError(f"{partition_path}: no image of the attribute file has partition {code} ({split})")
    check_listed_files(folder, image_ids, lines, attr_path)
    return {split: _records(root, by_split[code]) for code, split in enumerate(SPLITS)}


def _records(root: Path, entries: list) -> ImageRecords:
    paths, labels, attributes, index = zip(*entries)
    return ImageRecords(root, paths, labels, attributes, index)


def _attributes(options: Mapping) -> tuple[str, str]:
    """prepare.celeba.target and .spurious, checked to be two different CelebA attributes."""
    for key in ("target", "spurious"):
        if options[key] not in ATTRIBUTE_NAMES:
            raise unknown_name(Path("params.yaml"), f"prepare.celeba.{key} attribute", options[key], ATTRIBUTE_NAMES)
    if options["target"] == options["spurious"]:
        raise UserError(f"params.yaml: prepare.celeba.target and prepare.celeba.spurious are both {options['target']!r}")
    return options["target"], options["spurious"]


def _prepare(config: PrepareConfig) -> dict[str, ImageRecords]:
    target, spurious = _attributes(config.options)
    return first_images(read_celeba(dataset_folder(config, SOURCES, IMAGE_FOLDER), target, spurious), config)


# The CelebA authors' Google Drive files, ids and md5s from torchvision 0.29 torchvision/datasets/celeba.py
# (CelebA.file_list): aligned images (a zip of img_align_celeba/), the 40 attributes and the official
# train/val/test partition. MaskTune's src/datasets/celebA.py reads the Kaggle CSV version of the same two
# lists (list_attr_celeba.csv, list_eval_partition.csv), which WILDS serves as CodaLab bundle
# 0xfe55077f5cd541f985ebf9ec50473293 (wilds/datasets/celebA_dataset.py, compressed_size 1_308_557_312, no
# checksum); the .txt files hold the same values, space-separated, after a count line and a header line.
_SOURCE = {"param": "prepare.celeba.dir", "description": "CelebA (Liu et al. 2015)"}
SOURCES = (
    Source(url=drive_url("0B7EVK8r0v71pZjFTYXZWM3FlRnM"), filename="img_align_celeba.zip",
           md5="00d2c5bc6d35e252742224ab0c1e8fcb", **_SOURCE),
    Source(url=drive_url("0B7EVK8r0v71pblRyaVFSWGxPY0U"), filename="list_attr_celeba.txt",
           md5="75e246fa4810816ffd6ee81facbd244c", **_SOURCE),
    Source(url=drive_url("0B7EVK8r0v71pY0NSMzRuSXJEVkk"), filename="list_eval_partition.txt",
           md5="d32c9cbf5e040fd4025c592c306e6668", **_SOURCE),
)

PARAMS = {"dir": FilePath(nullable=True), "limit": Int(1, nullable=True),  # prepare.celeba.*
          "target": Text(), "spurious": Text()}  # attribute names: checked by the reader

SPEC = DatasetSpec(
    params=PARAMS,
    name="celeba", num_classes=NUM_CLASSES, group_names=lambda options: group_names(*_attributes(options)),
    test_splits=("test",), prepare=_prepare, sources=SOURCES,
    # Official src/methods/celebA_train.py: transform_test and transform_data_to_mask are both
    # CenterCrop(min(178, 218) = 178), then Resize((224, 224)).
    views=DatasetViews(
        masking=Geometry((CenterCrop(178), Resize((224, 224)))),
        evaluation=Geometry((CenterCrop(178), Resize((224, 224)))),
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        train=TrainTransform("crop_flip", {"ratio": (1.0, 1.3333333333333333), "mean": IMAGENET_MEAN,
                                           "std": IMAGENET_STD, "size": 224}),
    ),
)
