"""Tiny Waterbirds, CelebA and IN-9L folders in exactly the real on-disk formats.

The real datasets are not reachable from the tests; these builders write a few small JPEGs plus
the metadata files the readers in `masktune.datasets` parse, laid out as the real downloads are.
They are deterministic (same arguments, same bytes) and quick (about 0.1 s for the defaults), and
the pictures carry the signal and the spurious cue so end-to-end runs can learn something:

- Waterbirds: background = place (green land / blue water, with noise), a bird blob whose colour
  is the label (brown landbird / white waterbird); widths vary (the real images differ in size)
  and every 7th image is a greyscale JPEG (CUB has some);
- CelebA: 36 x 44 px (the real 178 x 218 aspect); hair band blond or dark (the target), a lower
  band darker for the spurious attribute;
- IN-9L: a class-coloured square; the background depends on the class for `original`, `mixed_same`
  and the training set, is random for `mixed_rand`/`mixed_next`, black for `only_fg`; `no_fg` and
  `only_bg_*` have no class square.

Counts are per group, group = 2 * attribute + label (Waterbirds: 2 * place + y).
"""
from __future__ import annotations

import csv
import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from masktune.datasets import DATASETS
from masktune.datasets.celeba import ATTRIBUTE_NAMES
from masktune.datasets.in9l import CLASS_FOLDERS, VARIANTS
from masktune.datasets.spec import PrepareConfig

SPLIT_CODE = {"train": 0, "val": 1, "test": 2}

WATERBIRDS_COUNTS: dict[str, tuple[int, int, int, int]] = {
    "train": (6, 1, 2, 5), "val": (2, 2, 2, 2), "test": (3, 2, 2, 3)}
WATERBIRD_SPECIES = {0: ("010.Red_winged_Blackbird", "094.White_breasted_Nuthatch"),
                     1: ("001.Black_footed_Albatross", "045.Northern_Fulmar")}
PLACE_FOLDERS = {0: ("/b/bamboo_forest", "/f/forest/broadleaf"), 1: ("/o/ocean", "/l/lake/natural")}

CELEBA_COUNTS: dict[str, tuple[int, int, int, int]] = {
    "train": (5, 2, 4, 1), "val": (2, 1, 2, 1), "test": (2, 1, 2, 1)}

IN9_WNIDS = ("n02084071", "n01503061", "n04576211", "n01661091", "n02075296", "n02159955", "n03800933",
             "n02469914", "n02512053")
CLASS_COLOURS = np.array([(230, 30, 30), (30, 200, 30), (30, 30, 230), (220, 220, 30), (220, 30, 220),
                          (30, 220, 220), (250, 140, 0), (120, 60, 200), (250, 250, 250)], dtype=np.int16)


def save_jpeg(path: Path, pixels: np.ndarray, grey: bool = False) -> None:
    """Write uint8 (H, W, 3) pixels as a JPEG (greyscale 'L' mode if `grey`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    (image.convert("L") if grey else image).save(path, format="JPEG", quality=90)


def _noisy(rng: np.random.Generator, height: int, width: int, colour) -> np.ndarray:
    return np.asarray(colour, dtype=np.int16) + rng.integers(-25, 26, size=(height, width, 3), dtype=np.int16)


def _group_order(counts: Sequence[int], rng: np.random.Generator) -> list[int]:
    groups = [g for g, n in enumerate(counts) for _ in range(n)]
    return [groups[i] for i in rng.permutation(len(groups))]


# ---------------------------------------------------------------------------------------------
# Waterbirds


def make_waterbirds(root: str | Path, counts: Mapping[str, Sequence[int]] = WATERBIRDS_COUNTS, *,
                    size: int = 40, seed: int = 0, grey_every: int = 7) -> Path:
    """A Waterbirds folder: `metadata.csv` (img_id, img_filename, y, split, place, place_filename)
    and CUB-style `NNN.Species/Species_XXXX.jpg` images; `counts[split]` = images per group 0-3.

    Rows are shuffled across splits (as in the real file); returns `root`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    entries = [(split, g) for split in ("train", "val", "test") for g in _group_order(counts[split], rng)]
    entries = [entries[i] for i in rng.permutation(len(entries))]
    rows = []
    for img_id, (split, group) in enumerate(entries, start=1):
        y, place = group % 2, group // 2
        species = WATERBIRD_SPECIES[y][img_id % 2]
        filename = f"{species}/{species.split('.', 1)[1]}_{img_id:04d}_{img_id % 89 + 1}.jpg"
        width = size + 4 * (img_id % 3)
        pixels = _noisy(rng, size, width, (60, 130, 40) if place == 0 else (40, 90, 170))
        bird = (150, 75, 30) if y == 0 else (235, 235, 225)
        top, left = size // 4 + img_id % 3, width // 4 + img_id % 4
        pixels[top:top + size // 2, left:left + width // 2] = _noisy(rng, size // 2, width // 2, bird)
        save_jpeg(root / filename, pixels, grey=grey_every > 0 and img_id % grey_every == 0)
        place_file = f"{PLACE_FOLDERS[place][img_id % 2]}/{img_id:08d}.jpg"
        rows.append((img_id, filename, y, SPLIT_CODE[split], place, place_file))
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("img_id", "img_filename", "y", "split", "place", "place_filename"))
        writer.writerows(rows)
    return root


# ---------------------------------------------------------------------------------------------
# CelebA


def make_celeba(root: str | Path, counts: Mapping[str, Sequence[int]] = CELEBA_COUNTS, *,
                formats: Sequence[str] = ("csv",), nested: bool = False, seed: int = 0,
                size: tuple[int, int] = (36, 44), target: str = "Blond_Hair", spurious: str = "Male") -> Path:
    """A CelebA folder: `list_attr_celeba` and `list_eval_partition` as `formats` ("csv": Kaggle,
    "txt": original; both may be written), images `000001.jpg`... in `img_align_celeba/` (or
    `img_align_celeba/img_align_celeba/` if `nested`, as the Kaggle zip has them).

    `counts[split]` = images per group 2 * spurious + target; ids run train, val, test as in the
    real partition; the other 38 attributes are random -1/1. `size` = (width, height). Returns root.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    images = root / "img_align_celeba" / ("img_align_celeba" if nested else "")
    t, s = ATTRIBUTE_NAMES.index(target), ATTRIBUTE_NAMES.index(spurious)
    width, height = size
    attr_rows, partition_rows = [], []
    for split in ("train", "val", "test"):
        for group in _group_order(counts[split], rng):
            image_id = f"{len(attr_rows) + 1:06d}.jpg"
            values = rng.choice([-1, 1], size=len(ATTRIBUTE_NAMES))
            values[t], values[s] = (1 if group % 2 else -1), (1 if group // 2 else -1)
            pixels = _noisy(rng, height, width, (120, 120, 125))
            face_x, hair_h = width // 5, height // 4
            pixels[height // 5:, face_x:width - face_x] = _noisy(rng, height - height // 5, width - 2 * face_x,
                                                                 (215, 175, 145))
            pixels[:hair_h] = _noisy(rng, hair_h, width, (235, 205, 95) if values[t] == 1 else (45, 35, 25))
            if values[s] == 1:
                chin_x = width // 4
                pixels[height - hair_h:, chin_x:width - chin_x] = _noisy(rng, hair_h, width - 2 * chin_x, (95, 75, 60))
            save_jpeg(images / image_id, pixels)
            attr_rows.append((image_id, [int(v) for v in values]))
            partition_rows.append((image_id, SPLIT_CODE[split]))
    if "csv" in formats:
        with open(root / "list_attr_celeba.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(("image_id", *ATTRIBUTE_NAMES))
            writer.writerows((image_id, *values) for image_id, values in attr_rows)
        with open(root / "list_eval_partition.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(("image_id", "partition"))
            writer.writerows(partition_rows)
    if "txt" in formats:
        lines = [f"{len(attr_rows)}", " ".join(ATTRIBUTE_NAMES) + " "]
        lines += [f"{image_id} " + " ".join(f"{v:2d}" for v in values) for image_id, values in attr_rows]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (root / "list_eval_partition.txt").write_text("".join(f"{i} {p}\n" for i, p in partition_rows))
    return root


# ---------------------------------------------------------------------------------------------
# IN-9L and the Backgrounds Challenge


def _in9_image(rng: np.random.Generator, label: int, variant: str, size: int) -> np.ndarray:
    if variant == "only_fg":
        pixels = np.zeros((size, size, 3), dtype=np.int16)
    elif variant in ("mixed_rand", "mixed_next"):
        pixels = _noisy(rng, size, size, rng.integers(40, 200, size=3))
    else:  # the class's own kind of background (IN-9L, original, mixed_same, no_fg, only_bg_*)
        pixels = _noisy(rng, size, size, 60 + CLASS_COLOURS[(label + 4) % 9] // 3)
    lo, hi = size // 4, size - size // 4
    if variant == "no_fg":
        pixels[lo:hi, lo:hi] = 0
    elif not variant.startswith("only_bg"):
        pixels[lo:hi, lo:hi] = _noisy(rng, hi - lo, hi - lo, CLASS_COLOURS[label])
    return pixels


def _in9_split(folder: Path, per_class: int, variant: str, rng: np.random.Generator, size: int) -> None:
    for label, class_folder in enumerate(CLASS_FOLDERS):
        for k in range(per_class):
            name = f"{IN9_WNIDS[label]}_{1000 + 7 * k + label}.JPEG"
            save_jpeg(folder / class_folder / name, _in9_image(rng, label, variant, size))


def make_in9l(root: str | Path, *, train_per_class: int = 3, val_per_class: int = 1, test_per_class: int = 1,
              variants: Sequence[str] = VARIANTS, size: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """IN-9L `root/in9l/{train,val}/<class>/*.JPEG` and the Backgrounds Challenge
    `root/bg_challenge/<variant>/val/<class>/*.JPEG` (plus `fg_mask/val/<class>/*.npy`, as in the
    release, which is not a test split). Returns (train_root, challenge_root).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    train_root, challenge_root = root / "in9l", root / "bg_challenge"
    _in9_split(train_root / "train", train_per_class, "original", rng, size)
    _in9_split(train_root / "val", val_per_class, "original", rng, size)
    for variant in variants:
        _in9_split(challenge_root / variant / "val", test_per_class, variant, rng, size)
    for label, class_folder in enumerate(CLASS_FOLDERS):
        mask_dir = challenge_root / "fg_mask" / "val" / class_folder
        mask_dir.mkdir(parents=True, exist_ok=True)
        np.save(mask_dir / f"{IN9_WNIDS[label]}_{1000 + label}.npy", np.ones((size, size), dtype=bool))
    return train_root, challenge_root


# ---------------------------------------------------------------------------------------------
# MNIST: the four IDX files, gzipped, as distributed (the synthetic twin of ../shared/data/mnist)

IDX_MAGIC = {3: 0x803, 1: 0x801}  # unsigned bytes, 3 dims (images) / 1 dim (labels)
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An IDX file of unsigned bytes (the MNIST format): magic, big-endian dimensions, the bytes."""
    header = IDX_MAGIC[array.ndim].to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def make_mnist(root: Path, n_train: int = 3000, n_test: int = 1000, seed: int = 0) -> Path:
    """Synthetic digits in MNIST's exact on-disk format (gzipped IDX): digit d is a bright vertical
    stroke at column 4 + 2d over faint noise, so a small CNN learns them in one epoch. Not MNIST:
    for the plumbing only, never for a result."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        digits = rng.permutation(np.arange(n) % 10)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, digit in enumerate(digits):
            images[i, 6:22, 4 + 2 * digit:6 + 2 * digit] = 255
        images_file, labels_file = MNIST_FILES[split]
        write_idx(root / f"{images_file}.gz", images, gz=True)
        write_idx(root / f"{labels_file}.gz", digits, gz=True)
    return root


# ---------------------------------------------------------------------------------------------
# A user's own images (the `folder` dataset): an ImageFolder tree and a CSV index

FOLDER_CLASSES = ("cat", "dog", "fox")
FOLDER_COUNTS = {"train": 12, "val": 14, "test": 6, "test_shifted": 6}  # per class


def _object_image(rng: np.random.Generator, height: int, width: int, cls: int, background) -> np.ndarray:
    """Noisy background with a class-coloured square in the middle (the signal)."""
    pixels = _noisy(rng, height, width, background)
    top, left = height // 2 - 5, width // 2 - 5
    pixels[top:top + 10, left:left + 10] = CLASS_COLOURS[cls]
    return pixels


def _save_image(path: Path, pixels: np.ndarray, grey: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    image = image.convert("L") if grey else image
    image.save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=90)


def make_image_folder(root: Path, counts: Mapping[str, int] = FOLDER_COUNTS,
                      classes: Sequence[str] = FOLDER_CLASSES, seed: int = 0) -> Path:
    """`root/<split>/<class>/...`: JPEGs and PNGs alternating, every 5th greyscale, every 4th in a nested
    `more/` folder, sizes varying between 36 and 44 pixels a side; the background depends on the class in
    every split but `test_shifted`, where it is random (a shortcut to lose)."""
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for c, name in enumerate(classes):
            for i in range(n):
                background = CLASS_COLOURS[(c + 3) % 9] if split != "test_shifted" else CLASS_COLOURS[rng.integers(9)]
                pixels = _object_image(rng, 36 + (i % 3) * 4, 44 - (i % 2) * 8, c, background // 2)
                nested = "more/" if i % 4 == 3 else ""
                _save_image(root / split / name / f"{nested}{name}_{i:03d}{'.png' if i % 2 else '.jpg'}", pixels,
                            grey=i % 5 == 0)
    return root


def save_huge_png(path: Path, width: int, height: int) -> Path:
    """A valid black 1-bit greyscale PNG of width x height, written row by row without ever holding the
    image: 9000 x 8000 takes about 9 KB, and Pillow would decode it to 216 MB of RGB (a decompression
    bomb, as a probe found: a 140 KB PNG that decodes to 1.5 GB)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter 0, then the row's bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


CSV_CLASSES = ("bird", "cat", "dog")
CSV_ATTRIBUTES = ("grass", "sand")
# per split: images per (class, attribute), attribute-major: grass bird, grass cat, grass dog, sand ...
CSV_COUNTS = {"train": (6, 2, 6, 2, 6, 2), "val": (12, 12, 12, 12, 12, 12), "test": (3, 3, 3, 3, 3, 3)}


def make_csv_index(root: Path, counts: Mapping[str, Sequence[int]] = CSV_COUNTS, seed: int = 0) -> Path:
    """`root/index.csv` listing 28 x 28 PNGs under `root/images/<split>/` (every 6th greyscale), with
    the columns id, path, label, split, spurious, notes (two of them extra), rows shuffled; the
    background is the spurious attribute (green grass, yellow sand). Returns the CSV's path."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, per_group in counts.items():
        for g, n in enumerate(per_group):
            attribute, cls = divmod(g, len(CSV_CLASSES))
            for i in range(n):
                background = (40, 120, 40) if attribute == 0 else (200, 180, 80)
                path = Path("images") / split / f"{CSV_CLASSES[cls]}_{CSV_ATTRIBUTES[attribute]}_{i:03d}.png"
                _save_image(root / path, _object_image(rng, 28, 28, cls, background), grey=i % 6 == 5)
                rows.append([len(rows), path.as_posix(), CSV_CLASSES[cls], split, CSV_ATTRIBUTES[attribute],
                             f"note {i}"])
    order = rng.permutation(len(rows))
    with open(root / "index.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path", "label", "split", "spurious", "notes"])
        writer.writerows(rows[i] for i in order)
    return root / "index.csv"


# ---------------------------------------------------------------------------------------------
# The paper's selective-classification sets, in their distributed formats: CIFAR-10's python pickles,
# SVHN's MATLAB v5 files, Kaggle's cat.<id>.jpg / dog.<id>.jpg folder

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _class_pixels(rng: np.random.Generator, labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (N, H, W, 3): noise, with a bright bar whose row says the class (a signal a CNN can learn)."""
    images = rng.integers(0, 60, (len(labels), height, width, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 2 + int(label) * (height - 4) // 10
        images[i, row:row + 2, 2:width - 2, int(label) % 3] = 250
    return images


def make_cifar10(root: Path, per_batch: int = 12, n_test: int = 10, seed: int = 0, bytes_keys: bool = False) -> Path:
    """`root/cifar-10-batches-py/` as the tarball unpacks it: data_batch_1..5, test_batch and batches.meta,
    pickled dicts (protocol 2) of `data` uint8 (N, 3072) channel-major rows, `labels` a list of ints,
    `filenames`, `batch_label`; batches.meta `label_names`, `num_cases_per_batch`, `num_vis`. `bytes_keys`:
    keys as bytes, as a reader without encoding='latin1' sees them. Returns `root`."""
    import pickle

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, content: dict) -> None:
        if bytes_keys:
            content = {key.encode(): value for key, value in content.items()}
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)

    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(batches):
        n = n_test if name == "test_batch" else per_batch
        labels = rng.permutation(np.arange(n) % 10)
        images = _class_pixels(rng, labels, 32, 32)
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane, row-major
        dump(name, {"batch_label": f"{'testing' if name == 'test_batch' else 'training'} batch {b + 1} of 5",
                    "labels": [int(x) for x in labels], "data": np.ascontiguousarray(data),
                    "filenames": [f"image_{b}_{i}.png" for i in range(n)]})
    dump("batches.meta", {"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_LABEL_NAMES), "num_vis": 3072})
    return root


def make_svhn(root: Path, n_train: int = 30, n_test: int = 12, seed: int = 0) -> Path:
    """`root/train_32x32.mat` and `root/test_32x32.mat` as distributed: MATLAB v5 files (scipy.io.savemat)
    with `X` uint8 (32, 32, 3, N) and `y` uint8 (N, 1), digit 0 written as 10. Returns `root`."""
    import scipy.io

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        digits = rng.permutation(np.arange(n) % 10)
        images = _class_pixels(rng, digits, 32, 32)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(root / name, {"X": np.ascontiguousarray(images.transpose(1, 2, 3, 0)), "y": y})
    return root


def make_cats_vs_dogs(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    """Kaggle's Dogs vs. Cats `train/` folder: `cat.<id>.jpg` and `dog.<id>.jpg`, ids 0..per_class-1 of each,
    JPEGs of varying sizes (as the real ones), a reddish blob on cats, a bluish one on dogs; every 9th a
    greyscale JPEG. Returns `root`."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(("cat", "dog")):
        colour = (200, 60, 40) if label == 0 else (40, 80, 200)
        for i in range(per_class):
            height, width = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            pixels = _noisy(rng, height, width, (110, 110, 110))
            pixels[height // 4:3 * height // 4, width // 4:3 * width // 4] = colour
            save_jpeg(root / f"{name}.{i}.jpg", pixels, grey=i % 9 == 8)
    return root


def prepared_attributes(name: str, **options) -> dict:
    """The attributes `prepare` writes into a prepared file of dataset `name` (its views, test splits,
    group names, ...), for a file a test or benchmark writes itself: the committed `prepare.<name>`
    params with `options` over them."""
    from scratch import committed_params

    config = PrepareConfig(dataset=name, options=MappingProxyType({**committed_params()["prepare"][name], **options}), download=False, download_dir=None)
    return DATASETS[name].file_attributes(config)
