"""Write biased MNIST as a folder of PNG files: the worked example of README "Your own data".

    python scripts/export_biased_mnist.py --mnist-dir ../shared/data/mnist --out data/own/biased_mnist

builds biased MNIST exactly as `prepare` does (the committed `prepare.biased_mnist` params, or
--params) and writes

    <out>/<split>/<class>/<row>.png    an ImageFolder tree: splits train, val, test_original and
                                       test_biased; classes digits_0-4 and digits_5-9
    <out>/index.csv                    the same files, one row each: path, label, split, spurious
                                       (square / no_square), digit (an extra column)

File names are the row numbers of the built-in splits, zero-padded, so both layouts list the images in
the built-in order, and PNG keeps every pixel: `dataset: folder` on either then trains on the very
same arrays as `dataset: biased_mnist`. Only the CSV knows the square, so only it gives group metrics.

`--size 32` writes every image resized to 32 x 32 (PIL's bilinear, torchvision's `Resize` default) instead:
a dataset whose files are not the network's input size, read back with `prepare.folder.transforms: resize`
and `image_size: 28` (bench/resized_folder.py: MaskTune's masks must be put on the files as stored).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from masktune.config.files import parse_yaml
from masktune.datasets.biased_mnist import build_biased_mnist
from masktune.datasets.mnist_idx import load_mnist

CLASS_NAMES = ("digits_0-4", "digits_5-9")
ATTRIBUTE_NAMES = ("no_square", "square")


def export(splits: dict, out: Path, digits: dict[str, np.ndarray], size: int | None = None) -> int:
    """Write every split's images (resized to `size` x `size` when given) and the index; returns the number
    of images written."""
    rows = []
    for split, samples in splits.items():
        width = len(str(len(samples)))
        for i in tqdm(range(len(samples)), desc=f"write {split}", unit="image", disable=None, mininterval=1.0):
            path = Path(split) / CLASS_NAMES[samples.labels[i]] / f"{i:0{width}d}.png"
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(samples.images[i])
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            image.save(out / path, format="PNG")
            rows.append([path.as_posix(), CLASS_NAMES[samples.labels[i]], split,
                         ATTRIBUTE_NAMES[samples.attributes[i]], int(digits[split][i])])
    with open(out / "index.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "spurious", "digit"])
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, required=True, help="folder with the four MNIST IDX files")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must not exist)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml",
                        help="params file whose prepare.biased_mnist section to use")
    parser.add_argument("--size", type=int, help="write every image resized to SIZE x SIZE (bilinear)")
    args = parser.parse_args()
    if args.out.exists():
        sys.exit(f"error: {args.out} exists: choose a new folder")
    options = parse_yaml(args.params.read_text())["prepare"]["biased_mnist"]
    mnist = load_mnist(args.mnist_dir)
    splits = build_biased_mnist(
        mnist, conflicting_ratio=options["bias_conflicting_ratio"], square_size=options["square_size"],
        color=tuple(options["square_color"]), placement=options["square_placement"], val_size=options["val_size"],
        seed=options["seed"], train_limit=options["train_limit"], test_limit=options["test_limit"])
    # the digit of each row, for the extra column: source_index points into MNIST's train or test file
    digits = {split: mnist["test" if split.startswith("test") else "train"][1][s.source_index]
              for split, s in splits.items()}
    tmp = args.out.with_name(args.out.name + ".partial")
    tmp.mkdir(parents=True)
    count = export(splits, tmp, digits, args.size)
    tmp.rename(args.out)
    print(f"{args.out}: {count:,} PNG files in {len(splits)} splits, and index.csv")


if __name__ == "__main__":
    main()
