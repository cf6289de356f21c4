"""C-MNIST (coloured MNIST) exactly as ExMap's official code builds it.

Reference: rwchakra/exmap src/data/datasets.py L141-204 (class `CMNISTDataset`); notes in
/tmp/exmap_notes.md section 1.
- splits (L147-156): train = the first 50,000 MNIST training images (`data[:-val_size]`), val = the
  last `val_size` (10,000) training images, test = the 10,000 MNIST test images; file order, no shuffle.
- label (L160): y = (digit > 4).
- colour s (L158, L164-166): for each split, `np.random.seed(seed)`, then
  `binomial(1, color_correlation, size=n0)` for the class-0 images, then
  `binomial(1, 1 - color_correlation, size=n1)` for the class-1 images (class 0 draws first). The same
  correlation in train, val and test: the test colours are *not* reversed (unlike IRM's C-MNIST).
- image (L176-182): the digit (data / 255) in the red channel (index 0) when s = 0, in the green channel
  (index 1) when s = 1; the other channels 0. No normalisation, no resizing, no augmentation (the
  `transform` argument is never used). Here the images are stored as uint8 grey values in that channel;
  the pipeline's `to_input` divides by 255, which equals the official `data / 255.`.

The draws use `np.random.RandomState(seed)`, the same stream as the official legacy global seed, without
touching the global numpy generator. Groups: the project's 2 * s + y (ExMap numbers them 2 * y + s,
src/data/datasets.py L73-76; the four groups are the same).
"""
from __future__ import annotations

import numpy as np

from masktune.config.fields import FilePath, Int, Number
from masktune.data.samples import SampleSet
from masktune.data.views import PLAIN
from masktune.datasets.mnist_idx import load_mnist
from masktune.datasets.spec import DatasetSpec, PrepareConfig, download_location
from masktune.errors import UserError

RED, GREEN = 0, 1  # the channel of s = 0 and of s = 1 (official L180-181)
GROUP_NAMES = {0: "y0_red", 1: "y1_red", 2: "y0_green", 3: "y1_green"}


def draw_colours(labels: np.ndarray, color_correlation: float, seed: int) -> np.ndarray:
    """The official colour draw of one split (L158, L164-166): s ~ Bernoulli(color_correlation) for
    class 0, then s ~ Bernoulli(1 - color_correlation) for class 1, from a generator seeded `seed`."""
    rng = np.random.RandomState(seed)
    colours = np.zeros_like(labels)
    colours[labels == 0] = rng.binomial(1, color_correlation, size=(labels == 0).sum())
    colours[labels == 1] = rng.binomial(1, 1 - color_correlation, size=(labels == 1).sum())
    return colours


def build_cmnist_split(images: np.ndarray, digits: np.ndarray, source_index: np.ndarray,
                       color_correlation: float, seed: int) -> SampleSet:
    """One split: label digit > 4, colour drawn with its own seeded generator, the grey digit in the
    red (s = 0) or green (s = 1) channel of an otherwise black (N, 28, 28, 3) uint8 image."""
    labels = (np.asarray(digits) > 4).astype(np.int64)
    colours = draw_colours(labels, color_correlation, seed).astype(np.int64)
    rgb = np.zeros((*images.shape, 3), dtype=np.uint8)
    rgb[colours == 0, ..., RED] = images[colours == 0]
    rgb[colours == 1, ..., GREEN] = images[colours == 1]
    return SampleSet(rgb, labels, colours, np.asarray(source_index, dtype=np.int64))


def build_cmnist(mnist: dict[str, tuple[np.ndarray, np.ndarray]], *, color_correlation: float, val_size: int,
                 seed: int, train_limit: int | None = None, test_limit: int | None = None) -> dict[str, SampleSet]:
    """train, val and test from MNIST's train and test files (optionally only their first images):
    val is the last `val_size` training images, train the ones before (official L151-156)."""
    train_images, train_digits = (a[:train_limit] for a in mnist["train"])
    test_images, test_digits = (a[:test_limit] for a in mnist["test"])
    n = len(train_digits)
    if not 0 < val_size < n:
        raise UserError(f"params.yaml: prepare.cmnist.val_size must be between 1 and {n - 1} "
                        f"(the training set has {n} images), got {val_size}")
    cut = n - val_size
    index = np.arange(n)
    return {
        "train": build_cmnist_split(train_images[:cut], train_digits[:cut], index[:cut], color_correlation, seed),
        "val": build_cmnist_split(train_images[cut:], train_digits[cut:], index[cut:], color_correlation, seed),
        "test": build_cmnist_split(test_images, test_digits, np.arange(len(test_digits)), color_correlation, seed),
    }


def _prepare(config: PrepareConfig) -> dict[str, SampleSet]:
    options = config.options
    mnist = load_mnist(options["mnist_dir"], "prepare.cmnist.mnist_dir", download_location(config, "mnist"))
    return build_cmnist(mnist, color_correlation=options["color_correlation"],
                        val_size=options["val_size"], seed=options["seed"], train_limit=options["train_limit"],
                        test_limit=options["test_limit"])


# 28 x 28 pixel arrays input as they are (official: data / 255, no transform).
PARAMS = {  # prepare.cmnist.*
    "mnist_dir": FilePath(nullable=True),
    "color_correlation": Number(0.0, 1.0),
    "val_size": Int(1),
    "seed": Int(0),
    "train_limit": Int(2, nullable=True),
    "test_limit": Int(1, nullable=True),
}

SPEC = DatasetSpec(params=PARAMS, name="cmnist", num_classes=2, group_names=lambda options: GROUP_NAMES,
                   test_splits=("test",), prepare=_prepare, views=PLAIN,
                   class_names=("digits_0-4", "digits_5-9"))
