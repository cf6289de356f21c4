"""Plain 10-class MNIST: the digits as they are, no spurious attribute.

The dataset of selective classification on this machine (README "Selective classification"): the
paper runs it on CIFAR-10, SVHN and Cats vs Dogs, which are not here; MNIST is (`../shared/data`).
- classes: the ten digits, in the files' order (no grouping by digit: nothing is painted);
- grey digits copied to 3 RGB channels, as biased MNIST's (official src/datasets/mnist_rgb.py);
- validation: `val_size` training digits drawn with a seeded generator, the rest kept in order, as
  biased MNIST draws its 12,000 (official src/methods/mnist_train.py, there unseeded);
- test: the 10,000 MNIST test digits. No attribute: the groups are the classes (`groups_known` False).
"""
from __future__ import annotations

import numpy as np

from masktune.config.fields import FilePath, Int
from masktune.data.samples import SampleSet
from masktune.data.views import PLAIN
from masktune.datasets.biased_mnist import split_validation
from masktune.datasets.mnist_idx import load_mnist
from masktune.datasets.spec import DatasetSpec, PrepareConfig, download_location

CLASS_NAMES = tuple(str(digit) for digit in range(10))


def digits_split(images: np.ndarray, digits: np.ndarray) -> SampleSet:
    """One split in file order: RGB copies of the grey digits, the digit as label, no attribute."""
    rgb = np.repeat(np.asarray(images)[..., None], 3, axis=-1)
    digits = np.asarray(digits, dtype=np.int64)
    return SampleSet(rgb, digits, np.zeros_like(digits), np.arange(len(digits), dtype=np.int64), num_classes=10)


def build_mnist(mnist: dict[str, tuple[np.ndarray, np.ndarray]], *, val_size: int, seed: int,
                train_limit: int | None = None, test_limit: int | None = None) -> dict[str, SampleSet]:
    """train, val and test from MNIST's train and test files (optionally only their first digits)."""
    train_images, train_digits = (a[:train_limit] for a in mnist["train"])
    test_images, test_digits = (a[:test_limit] for a in mnist["test"])
    train, val = split_validation(digits_split(train_images, train_digits), val_size,
                                  np.random.default_rng(seed), "prepare.mnist.val_size")
    return {"train": train, "val": val, "test": digits_split(test_images, test_digits)}


def _prepare(config: PrepareConfig) -> dict[str, SampleSet]:
    options = config.options
    mnist = load_mnist(options["mnist_dir"], "prepare.mnist.mnist_dir", download_location(config, "mnist"))
    return build_mnist(mnist, val_size=options["val_size"],
                       seed=options["seed"], train_limit=options["train_limit"], test_limit=options["test_limit"])


PARAMS = {  # prepare.mnist.*
    "mnist_dir": FilePath(nullable=True),
    "val_size": Int(1),
    "seed": Int(0),
    "train_limit": Int(2, nullable=True),
    "test_limit": Int(1, nullable=True),
}

SPEC = DatasetSpec(params=PARAMS, name="mnist", num_classes=10, group_names=lambda options: dict(enumerate(CLASS_NAMES)),
                   test_splits=("test",), prepare=_prepare, views=PLAIN, class_names=CLASS_NAMES,
                   groups_known=False)
