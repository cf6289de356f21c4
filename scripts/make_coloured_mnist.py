"""Coloured-background MNIST: a 5-class, 25-group benchmark written as a folder dataset (CSV index).

    python scripts/make_coloured_mnist.py --mnist-dir ../shared/data/mnist --out data/own/coloured_mnist
    dvc exp run -S dataset=folder -S prepare.folder.csv=data/own/coloured_mnist/index.csv

Classes are the digits 0..4 (labels `digit_0`..`digit_4`); the spurious attribute is the background
colour, one of five (`COLOURS`: red, green, blue, yellow, magenta), so there are 5 x 5 = 25 groups.
Each image is the grey MNIST digit drawn in white over its background colour, per channel

    pixel = v * 255 + (1 - v) * colour,   v = digit intensity / 255,

rounded to the nearest integer (numpy's `rint`), a 28 x 28 RGB PNG (lossless).

Splits: `train` and `val` come from MNIST's training file (its digits 0-4, in file order; `val` is a
seeded random 20% of them, `round(0.2 n)`), `test` from MNIST's test file (its digits 0-4). In train
and val, an image of class c gets colour c with probability --correlation (default 0.95) and one of the
four other colours, uniformly, otherwise: val carries the training bias, as biased MNIST's val does. In
test every image gets one of the five colours uniformly at random, so the 25 groups are about equally
represented and the worst-group accuracy measures how much a model relies on the colour.

Randomness: one `numpy.random.default_rng(--seed)`, drawn in this order (always the full length, so the
draws do not depend on the correlation):

    1. rng.random(n)            n = digits 0-4 of the training file: image i keeps its class colour
                                where the draw is < correlation;
    2. rng.integers(0, 4, n)    otherwise the k-th of the four other colours (in `COLOURS` order);
    3. rng.permutation(n)       the first round(0.2 n) positions are val, the rest train (both splits
                                then keep the file order);
    4. rng.integers(0, 5, m)    m = digits 0-4 of the test file: each test image's colour.

The same arguments give byte-identical files. --limit N keeps the first N images of each MNIST file
(before keeping the digits 0-4), for quick tests.

Written: `<out>/<split>/<label>/<row>.png` (row: the image's number within its split, zero-padded) and
`<out>/index.csv` (columns path, label, split, spurious; `spurious` is the colour name), the layout
`masktune.datasets.folder.read_csv_index` reads. Everything is written into `<out>.partial` (index.csv
last, through a temporary name), which is renamed to `<out>` only when complete: a killed run never
leaves a folder that looks finished.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from masktune.datasets.mnist_idx import FILES, load_mnist
from masktune.errors import UserError

NUM_CLASSES = 5
CLASS_NAMES = tuple(f"digit_{d}" for d in range(NUM_CLASSES))
# colour index c is class c's colour in train and val
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
}
COLOUR_NAMES = tuple(COLOURS)
COLOUR_VALUES = np.array(list(COLOURS.values()), dtype=np.float64)  # (5, 3)
VAL_FRACTION = 0.2
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: grey digits (N, 28, 28) uint8, labels (the digit, 0-4), colour indices and the row of
    each image in its MNIST file."""

    grey: np.ndarray
    labels: np.ndarray
    colours: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def group_counts(self) -> np.ndarray:
        """(classes, colours) counts."""
        counts = np.zeros((NUM_CLASSES, len(COLOURS)), dtype=np.int64)
        np.add.at(counts, (self.labels, self.colours), 1)
        return counts


def colourise(grey: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """White digits over their background colours: (N, 28, 28) uint8 and (N,) colour indices ->
    (N, 28, 28, 3) uint8, pixel = v * 255 + (1 - v) * colour with v = grey / 255, rounded."""
    v = grey.astype(np.float64)[..., None] / 255.0
    background = COLOUR_VALUES[colours][:, None, None, :]
    return np.rint(v * 255.0 + (1.0 - v) * background).clip(0, 255).astype(np.uint8)


def biased_colours(labels: np.ndarray, keep: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The class's own colour where `keep`, else the `other`-th (0-3) of the four other colours."""
    shifted = other + (other >= labels)  # skip the class's own colour
    return np.where(keep, labels, shifted).astype(np.int64)


def _digits_0_to_4(images: np.ndarray, digits: np.ndarray, limit: int | None) -> tuple[np.ndarray, ...]:
    index = np.arange(len(digits) if limit is None else min(limit, len(digits)))
    index = index[digits[index] < NUM_CLASSES]
    return images[index], digits[index].astype(np.int64), index


def build(mnist: Mapping[str, tuple[np.ndarray, np.ndarray]], correlation: float, seed: int,
          limit: int | None = None) -> dict[str, Split]:
    """The three splits, drawn from one generator in the order the module docstring gives."""
    rng = np.random.default_rng(seed)
    grey, labels, source = _digits_0_to_4(*mnist["train"], limit)
    n = len(labels)
    keep = rng.random(n) < correlation                                   # 1.
    colours = biased_colours(labels, keep, rng.integers(0, NUM_CLASSES - 1, n))  # 2.
    order = rng.permutation(n)                                           # 3.
    is_val = np.zeros(n, dtype=bool)
    is_val[order[:round(VAL_FRACTION * n)]] = True
    test_grey, test_labels, test_source = _digits_0_to_4(*mnist["test"], limit)
    test_colours = rng.integers(0, len(COLOURS), len(test_labels)).astype(np.int64)  # 4.
    splits = {name: Split(grey[mask], labels[mask], colours[mask], source[mask])
              for name, mask in (("train", ~is_val), ("val", is_val))}
    splits["test"] = Split(test_grey, test_labels, test_colours, test_source)
    for name, split in splits.items():
        missing = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if not (split.labels == c).any()]
        if (missing and name == "train") or not len(split):
            raise UserError(f"too few digits: split {name!r} has {len(split)} images"
                            + (f" and no {', '.join(missing)}" if missing else "") + " (raise --limit)")
    return splits


def write(splits: Mapping[str, Split], out: Path) -> int:
    """Every split's PNGs under `out`, then `out/index.csv` (through a temporary name); the row count."""
    rows = []
    for name, split in splits.items():
        pixels = colourise(split.grey, split.colours)
        width = len(str(len(split)))
        for i in tqdm(range(len(split)), desc=f"write {name}", unit="image", disable=None, mininterval=1.0):
            label = CLASS_NAMES[split.labels[i]]
            path = Path(name) / label / f"{i:0{width}d}.png"
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i], "RGB").save(out / path, format="PNG")
            rows.append([path.as_posix(), label, name, COLOUR_NAMES[split.colours[i]]])
    tmp = out / "index.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "split", "spurious"])
        writer.writerows(rows)
    os.replace(tmp, out / "index.csv")
    return len(rows)


def report(splits: Mapping[str, Split]) -> str:
    """Per split: the image count, the class-colour agreement and the 5 x 5 group counts."""
    lines = []
    for name, split in splits.items():
        counts = split.group_counts()
        agree = np.trace(counts) / max(len(split), 1)
        lines.append(f"{name}: {len(split):,} images, {agree:.2%} on their class's colour; groups (class x colour):")
        lines.append("  " + " " * 9 + "".join(f"{c:>9}" for c in COLOUR_NAMES) + f"{'total':>9}")
        for c, row in enumerate(counts):
            lines.append(f"  {CLASS_NAMES[c]:<9}" + "".join(f"{x:>9,}" for x in row) + f"{row.sum():>9,}")
        lines.append(f"  {'total':<9}" + "".join(f"{x:>9,}" for x in counts.sum(0)) + f"{counts.sum():>9,}")
    return "\n".join(lines)


def missing_mnist(folder: Path) -> str | None:
    """Why `folder` cannot be MNIST (not a folder, or a file missing), or None; where `load_mnist` looks."""
    if not folder.is_dir():
        return f"--mnist-dir {folder}: no such folder (give the folder holding MNIST's four IDX files)"
    stems = [stem for pair in FILES.values() for stem in pair]
    absent = [stem for stem in stems if not any((base / name).is_file() for base in (folder, folder / "MNIST" / "raw")
                                                for name in (stem + ".gz", stem))]
    return f"--mnist-dir {folder}: missing MNIST file(s) {', '.join(absent)} (gzipped or not)" if absent else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, required=True, help="folder with the four MNIST IDX files")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must not exist)")
    parser.add_argument("--correlation", type=float, default=0.95,
                        help="train/val: probability that an image has its class's colour (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="seed of numpy.random.default_rng (default 0)")
    parser.add_argument("--limit", type=int, default=None,
                        help="keep only the first N images of each MNIST file (quick tests)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.correlation <= 1.0:
        parser.error(f"--correlation must be between 0 and 1, got {args.correlation}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out: Path = args.out
    if out.exists():
        sys.exit(f"error: {out} exists: choose a new folder (or delete it)")
    problem = missing_mnist(args.mnist_dir)
    if problem:
        sys.exit(f"error: {problem}")
    try:
        mnist = load_mnist(args.mnist_dir, param="--mnist-dir")
        splits = build(mnist, args.correlation, args.seed, args.limit)
    except UserError as error:
        sys.exit(f"error: {error}")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        print(f"removing {tmp}, left by an interrupted run")
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    count = write(splits, tmp)
    tmp.rename(out)
    print(report(splits))
    print(f"{out}: {count:,} PNG files in {len(splits)} splits, {NUM_CLASSES} classes x {len(COLOURS)} colours "
          f"= {NUM_CLASSES * len(COLOURS)} groups, and index.csv (correlation {args.correlation}, seed {args.seed})")


if __name__ == "__main__":
    main()
