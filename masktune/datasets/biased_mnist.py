"""Biased MNIST exactly as the official MaskTune code builds it.

Reference: aliasgharkhani/Masktune, src/datasets/mnist_rgb.py and src/utils/data_preprocess.py.
- `filter_data_by_label` concatenates the images digit by digit (all 0s, then all 1s, ...), so the
  official order is grouped by digit; `group_labels` maps digits 0-4 to class 0 and 5-9 to class 1.
- grey digits are copied to 3 RGB channels;
- `add_color_bias_to_images` (two classes) paints a `square_size` x `square_size` square of colour
  (255, 0, 0) in the top-left corner of the first round((1 - r) * n0) class-0 images and of the
  first round(r * n1) class-1 images, r being the bias-conflicting ratio. With r = 0.01 on the full
  training set, the 306 class-0 images left without the square are all 4s and the 294 class-1
  images with it are all 5s. `placement="random"` instead draws which images get the square with a
  seeded generator (an improvement to measure, not the official default).
- test splits: `test_original` has no square anywhere; `test_biased` uses r = 1.0, so every
  class-1 image has the square and no class-0 image has it.
- validation: 12,000 training digits drawn after the squares are added (official
  src/methods/mnist_train.py draws them with an unseeded `default_rng`; ours is seeded).
"""
from __future__ import annotations

import numpy as np

from masktune.config.fields import Choice, FilePath, Int, IntList, Number
from masktune.data.samples import SampleSet
from masktune.data.views import PLAIN
from masktune.datasets.mnist_idx import load_mnist
from masktune.datasets.spec import DatasetSpec, PrepareConfig, download_location
from masktune.errors import UserError

DIGITS_TO_CLASS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
GROUP_NAMES = {0: "y0_no_square", 1: "y1_no_square", 2: "y0_square", 3: "y1_square"}


def squares_per_class(class_sizes: dict[int, int], conflicting_ratio: float) -> dict[int, int]:
    """How many images of each class get the square (official two-class rule, Python rounding)."""
    return {0: round(class_sizes[0] * (1 - conflicting_ratio)),
            1: round(class_sizes[1] * conflicting_ratio)}


def build_biased_split(images: np.ndarray, digits: np.ndarray, conflicting_ratio: float | None,
                       square_size: int, color: tuple[int, int, int], placement: str = "official",
                       rng: np.random.Generator | None = None) -> SampleSet:
    """Group by digit, map to two classes, go RGB and paint squares (None ratio: no square at all)."""
    order = np.concatenate([np.flatnonzero(digits == d) for d in range(10)])
    rgb = np.repeat(images[order][..., None], 3, axis=-1)
    labels = DIGITS_TO_CLASS[digits[order]]
    has_square = np.zeros(len(order), dtype=np.int64)
    if conflicting_ratio is not None:
        sizes = {c: int((labels == c).sum()) for c in (0, 1)}
        for cls, count in squares_per_class(sizes, conflicting_ratio).items():
            members = np.flatnonzero(labels == cls)
            if placement == "official":
                chosen = members[:count]
            else:
                chosen = np.sort(rng.choice(members, size=count, replace=False))
            has_square[chosen] = 1
        rgb[has_square == 1, :square_size, :square_size, :] = np.asarray(color, dtype=np.uint8)
    return SampleSet(rgb, labels.astype(np.int64), has_square, order.astype(np.int64))


def split_validation(samples: SampleSet, val_size: int, rng: np.random.Generator,
                     param: str = "prepare.biased_mnist.val_size") -> tuple[SampleSet, SampleSet]:
    """Draw `val_size` samples for validation; the rest, in their order, stay for training."""
    if not 0 < val_size < len(samples):
        raise UserError(f"params.yaml: {param} must be between 1 and {len(samples) - 1} "
                        f"(the training set has {len(samples)} images), got {val_size}")
    val_index = np.sort(rng.choice(len(samples), size=val_size, replace=False))
    keep = np.ones(len(samples), dtype=bool)
    keep[val_index] = False
    return samples.subset(np.flatnonzero(keep)), samples.subset(val_index)


def build_biased_mnist(mnist: dict[str, tuple[np.ndarray, np.ndarray]], *, conflicting_ratio: float,
                       square_size: int, color: tuple[int, int, int], placement: str, val_size: int,
                       seed: int, train_limit: int | None = None,
                       test_limit: int | None = None) -> dict[str, SampleSet]:
    """All four splits from MNIST's train and test files (optionally only their first images)."""
    rng = np.random.default_rng(seed)
    train_images, train_digits = (a[:train_limit] for a in mnist["train"])
    test_images, test_digits = (a[:test_limit] for a in mnist["test"])
    biased_train = build_biased_split(train_images, train_digits, conflicting_ratio, square_size,
                                      color, placement, rng)
    train, val = split_validation(biased_train, val_size, rng)
    return {
        "train": train,
        "val": val,
        "test_original": build_biased_split(test_images, test_digits, None, square_size, color),
        "test_biased": build_biased_split(test_images, test_digits, 1.0, square_size, color),
    }


def _prepare(config: PrepareConfig) -> dict[str, SampleSet]:
    options = config.options
    mnist = load_mnist(options["mnist_dir"], cache=download_location(config, "mnist"))
    return build_biased_mnist(
        mnist, conflicting_ratio=options["bias_conflicting_ratio"],
        square_size=options["square_size"], color=options["square_color"], placement=options["square_placement"],
        val_size=options["val_size"], seed=options["seed"], train_limit=options["train_limit"],
        test_limit=options["test_limit"])


# The images are small pixel arrays, input to the model as they are (official MNIST transforms: ToTensor).
SQUARE_PLACEMENTS = ("official", "random")
PARAMS = {  # prepare.biased_mnist.*
    "mnist_dir": FilePath(nullable=True),
    "bias_conflicting_ratio": Number(0.0, 1.0),
    "square_size": Int(1, 28),
    "square_color": IntList(length=3, minimum=0, maximum=255),
    "square_placement": Choice(options=SQUARE_PLACEMENTS),
    "val_size": Int(1),
    "seed": Int(0),
    "train_limit": Int(2, nullable=True),
    "test_limit": Int(1, nullable=True),
}

SPEC = DatasetSpec(params=PARAMS, name="biased_mnist", num_classes=2, group_names=lambda options: GROUP_NAMES,
                   test_splits=("test_original", "test_biased"), prepare=_prepare, views=PLAIN,
                   class_names=("digits_0-4", "digits_5-9"))
