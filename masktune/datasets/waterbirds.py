"""Waterbirds read from its folder: `metadata.csv` and the images under their relative paths.

Both the original `waterbird_complete95_forest2water2` and the authors' corrected Waterbirds have
this layout. `metadata.csv` has the columns `img_id, img_filename, y, split, place,
place_filename`; `img_filename` is relative to the folder (`001.Black_footed_Albatross/...jpg`).

Reference: aliasgharkhani/Masktune, src/datasets/waterbirds.py (`WaterbirdsDataset`): it reads
`metadata.csv` with `csv.reader`, skips the header, takes `y` as the label, `split` through
`{0: 'train', 1: 'val', 2: 'test'}` and `place` as the spurious attribute returned with the
image; src/methods/waterbirds_train.py then scores group `2 * place + y` (worst-group accuracy on
`test`, and on `val` for model selection). We follow that, reading the columns by header name
(so extra columns or another column order work) and keeping the metadata file's row order (the
official code re-lists the copied images with `glob`, in no fixed order).

`prepare.waterbirds.target: Place` swaps the two: the background is the label and the bird the
spurious attribute (ClusterFix's `target_attr: Place`, ICCV11624 dataset/waterbirds.py L23-29: labels
from `place`, bias from `y`); groups are then 2 * bird + place (named, so the numbering differs
harmlessly from the official 2 * label + bias).
"""
from __future__ import annotations

from pathlib import Path

from masktune.config.fields import Choice, FilePath, Int
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
from masktune.datasets.download import Source
from masktune.datasets.readers import (
    check_listed_files,
    parse_code,
    read_csv_rows,
    require_dir,
    require_file,
)
from masktune.datasets.spec import DatasetSpec, PrepareConfig, dataset_folder, first_images
from masktune.errors import UserError

NUM_CLASSES = 2
CLASS_NAMES = ("landbird", "waterbird")
ATTRIBUTE_NAMES = ("land", "water")
GROUP_NAMES = {0: "landbird_land", 1: "waterbird_land", 2: "landbird_water", 3: "waterbird_water"}
# target Place: label = place, attribute = bird, group 2 * bird + place
PLACE_GROUP_NAMES = {0: "land_landbird", 1: "water_landbird", 2: "land_waterbird", 3: "water_waterbird"}
SPLIT_CODES = {"0": "train", "1": "val", "2": "test"}
SPLITS = ("train", "val", "test")
METADATA = "metadata.csv"
COLUMNS = ("img_filename", "y", "split", "place")
_BINARY = {"0": 0, "1": 1}


def read_waterbirds(root: str | Path, target: str = "Object") -> dict[str, ImageRecords]:
    """`{"train", "val", "test"}` records from `root/metadata.csv`: labels y and attributes place
    (target "Object"), or labels place and attributes y (target "Place").

    UserError (naming the file) for a missing folder or metadata file, a missing column, a split
    code other than 0/1/2 or a `y`/`place` other than 0/1 (naming the line), an empty split and
    an image listed but not found. Images are not decoded here (see `records.check_images`).
    """
    root = require_dir(Path(root), "Waterbirds folder")
    metadata = require_file(root / METADATA, "Waterbirds metadata file")
    _, rows = read_csv_rows(metadata, COLUMNS)
    if not rows:
        raise UserError(f"{metadata}: no rows after the header")
    by_split: dict[str, list] = {split: [] for split in SPLITS}
    all_paths, all_lines = [], []
    for row_index, (line, row) in enumerate(rows):
        split = SPLIT_CODES.get(row["split"])
        if split is None:
            raise UserError(f"{metadata}: line {line}: column 'split' must be 0, 1 or 2 "
                            f"(train/val/test), got {row['split']!r}")
        label = parse_code(row["y"], _BINARY, metadata, line, "y", "0 or 1 (landbird/waterbird)")
        place = parse_code(row["place"], _BINARY, metadata, line, "place", "0 or 1 (land/water)")
        filename = row["img_filename"]
        if not filename:
            raise UserError(f"{metadata}: line {line}: empty 'img_filename'")
        by_split[split].append((filename, label, place, row_index))
        all_paths.append(filename)
        all_lines.append(line)
    for split, code in zip(SPLITS, SPLIT_CODES):
        if not by_split[split]:
            raise UserError(f"{metadata}: no rows with split {code} ({split})")
    check_listed_files(root, all_paths, all_lines, metadata)
    return {split: _records(root, entries, target) for split, entries in by_split.items()}


def _records(root: Path, entries: list, target: str) -> ImageRecords:
    paths, birds, places, index = zip(*entries) if entries else ((), (), (), ())
    if target == "Place":
        return ImageRecords(root, paths, places, birds, index)
    return ImageRecords(root, paths, birds, places, index)


def _prepare(config: PrepareConfig) -> dict[str, ImageRecords]:
    records = read_waterbirds(dataset_folder(config, SOURCES, METADATA), config.options["target"])
    return first_images(records, config)


def _group_names(options) -> dict[int, str]:
    return PLACE_GROUP_NAMES if options.get("target") == "Place" else GROUP_NAMES


# The tarball the dataset's authors link in kohpangwei/group_DRO README.md ("Waterbirds"); it unpacks to
# waterbird_complete95_forest2water2/ (metadata.csv + 200 class folders), the folder MaskTune's
# src/datasets/waterbirds.py reads as raw_data_path. No checksum is published (WILDS serves the same files
# as CodaLab bundle 0x505056d5cdea4e4eaa0e242cbfe2daa4 with compressed_size None).
SOURCES = (
    Source(url="https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz",
           filename="waterbird_complete95_forest2water2.tar.gz", param="prepare.waterbirds.dir",
           description="Waterbirds (Sagawa et al. 2020)"),
)

PARAMS = {"dir": FilePath(nullable=True), "limit": Int(1, nullable=True),  # prepare.waterbirds.*
          "target": Choice(options=("Object", "Place"))}  # the bird (the usual task) | the background (BPA, ClusterFix)

SPEC = DatasetSpec(
    params=PARAMS,
    name="waterbirds", num_classes=NUM_CLASSES, group_names=_group_names, test_splits=("test",),
    prepare=_prepare, sources=SOURCES, average="average_accuracy_train_weighted",
    # Official src/methods/waterbirds_train.py: transform_test and transform_data_to_mask are both
    # Resize((int(224 * 256/224),) * 2) = Resize((256, 256)) (a stretch), then CenterCrop((224, 224)).
    views=DatasetViews(
        masking=Geometry((Resize((256, 256)), CenterCrop((224, 224)))),
        evaluation=Geometry((Resize((256, 256)), CenterCrop((224, 224)))),
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        train=TrainTransform("crop_flip", {"ratio": (0.75, 1.3333333333333333), "mean": IMAGENET_MEAN,
                                           "std": IMAGENET_STD, "size": 224}),
    ),
)
