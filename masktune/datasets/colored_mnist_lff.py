"""LfF's Colored MNIST (Nam et al., "Learning from Failure", NeurIPS 2020, arXiv 2007.02561), built as the
official code builds it: 10 digit classes, each training digit's strokes painted in one of 10 colours, the
colour agreeing with the digit in a share `ratio` of every class (the bias-aligned images), the other colours
sharing the rest equally; the evaluation split has every colour equally often in every class (unbiased).

Reference: alinlab/LfF at commit e66796e (its only commit). Every choice below, with its official source
(file and line), is listed in `DATASET_NOTES`. The pipeline's `dataset: colored_mnist_lff` (`SPEC`, params
`prepare.colored_mnist_lff.*`): the groups are (digit, colour), 100 of them; `evaluate`'s average is the
unbiased accuracy (the mean over the groups, what the LfF paper reports), beside plain accuracy and the
worst group.

    >>> mnist = load_mnist(folder)                       # masktune.datasets.mnist_idx
    >>> splits = build_colored_mnist_lff(mnist, ratio=0.99, seed=0)
    >>> splits["train"].images.shape, splits["train"].groups[:3]   # (60000, 28, 28, 3) uint8; colour * 10 + digit

`ratio` is the bias-aligned share (the paper's "ratio of bias-aligned samples", 95 / 98 / 99 / 99.5 %). The
official code names datasets by the conflicting share instead, `skewed_ratio` = 1 - ratio (make_dataset.py
L120: `bias_aligned_ratio = 1. - skewed_ratio`; L151: skewed 0.05, 0.02, 0.01, 0.005; config.py L115-136:
the `skewed1`..`skewed4` named configs), so ratio 0.99 is the official `skewed3`, the README's example.
"""
from __future__ import annotations

import numpy as np

from masktune.config.fields import Choice, FilePath, Int, Number
from masktune.data.samples import SampleSet
from masktune.data.views import PLAIN
from masktune.datasets.mnist_idx import load_mnist
from masktune.datasets.spec import DatasetSpec, PrepareConfig, download_location
from masktune.errors import UserError

NUM_CLASSES = 10
# The official mean colours (data/resource/colors.th, loaded by data/colored_mnist_protocol.py L8-9): a
# float32 tensor of shape (10, 3, 1, 1), RGB in [0, 1], colour i being the bias-aligned colour of digit i.
# The file is a 463-byte legacy torch pickle; these are its 30 float32 values, decoded from its last 120 bytes
# (little-endian) and checked against `torch.load` of the file: shortest decimal forms, exact in float32.
COLOURS = np.array([
    (0.98368233, 0.312519, 0.16857535),
    (0.99052966, 0.91560525, 0.3515122),
    (0.672964, 0.46107048, 0.5798082),
    (0.78325194, 0.8315559, 0.6013294),
    (0.088015795, 0.77796334, 0.98180777),
    (0.32139337, 0.96105456, 0.44644988),
    (0.024615884, 0.23565048, 0.7586663),
    (0.55524695, 0.10158014, 0.76176316),
    (0.2077232, 0.3929485, 0.018702388),
    (0.8336576, 0.20240927, 0.2669431),
], dtype=np.float32)
COLOURS.setflags(write=False)
# The per-image colour noise: its standard deviation by `severity` (colored_mnist_protocol.py L12).
SEVERITY_STD = {1: 0.05, 2: 0.02, 3: 0.01, 4: 0.005, 5: 0.002}
OFFICIAL_SEVERITY = 4                           # script/train.sh L4 and the README: `skewed3 severity4`
OFFICIAL_RATIOS = (0.95, 0.98, 0.99, 0.995)     # 1 - the skewed ratios of make_dataset.py L151
UNBIASED_RATIO = 1.0 / NUM_CLASSES              # the "valid" split's aligned share (make_dataset.py L121-122)
VAL_SOURCES = ("test", "train")
ASSIGNMENTS = ("official", "shuffled")
_CHUNK = 4096                                   # images coloured at a time (a float32 chunk is ~39 MB)

DATASET_NOTES = """\
| choice | what this module does | official source (alinlab/LfF e66796e) |
| --- | --- | --- |
| classes | the 10 digits, label = MNIST digit | make_dataset.py L137 (attrs = [target, colour]) |
| colours | 10 mean RGB colours, `COLOURS`, decoded from data/resource/colors.th | colored_mnist_protocol.py L8-9 |
| bias attribute | colour index 0..9; colour i is digit i's aligned colour | make_dataset.py L25-27 (the diagonal) |
| aligned share | `ratio` of each class gets its own colour; each of the 9 others gets (1 - ratio) / 9 | make_dataset.py L25-27 |
| counts | per class, round(n_c x cumsum of those shares) colour by colour, numpy round (half to even) | make_dataset.py L29-39 |
| which image gets which colour | in MNIST file order within each class: the first images colour 0, then 1, ... (`assignment="official"`); `"shuffled"`: the same counts at seeded random positions | make_dataset.py L41-48 |
| ratio naming | `ratio` = bias-aligned share = 1 - skewed_ratio; 0.95/0.98/0.99/0.995 = skewed 0.05/0.02/0.01/0.005 | make_dataset.py L120, L151; config.py L115-136 |
| colouring | one colour per image: clamp(mean colour + N(0, std^2) per channel, 0, 1), times the grey digit (0..255): strokes coloured, background stays 0 | colored_mnist_protocol.py L11-18 |
| noise std | by severity 1..5: 0.05, 0.02, 0.01, 0.005, 0.002; default severity 4 (0.005) | colored_mnist_protocol.py L12; script/train.sh L4 |
| pixel type | float32 products cast to uint8 by truncation, HWC: (N, 28, 28, 3) uint8 | make_dataset.py L133-134, L143 |
| splits | train = the 60,000 MNIST training digits; "valid" = the 10,000 MNIST test digits with aligned share 0.1 (every colour equally often in every class: unbiased) | make_dataset.py L115-126 |
| validation | the official code has no other split: train.py evaluates (and reports) on "valid", the test digits (train.py L56-61, L269-303; data/util.py L113). `val_source="test"` keeps that (val is a copy of test: selecting a checkpoint on it is selecting on the test set, with its group labels); `val_source="train"` holds out `val_size` coloured training images drawn at random (seeded), which carry the training bias | make_dataset.py L115; train.py L56-61 |
| input | ToTensor only: [0, 1], no normalisation, no augmentation (the MLP divides by 255 once more: masktune/models/mlp.py) | data/util.py L45-48 |
| randomness | the noise comes from numpy generators seeded by `seed` (one per split); the official draws it from torch's global generator, seeded by sacred with a random per-run seed, in one process that builds all 16 datasets in turn, so its exact images cannot be rebuilt | make_dataset.py L148-155; sacred randomness.set_global_seed |
| binary resource | colors.th was read (decoded above); no pre-generated dataset file is used: the images are rebuilt from MNIST | - |
"""


def group_names(num_classes: int = NUM_CLASSES, colours: int = NUM_CLASSES) -> dict[int, str]:
    """{group id: name} for group = colour * num_classes + digit (SampleSet.groups), e.g. 73: "digit3_colour7"."""
    return {colour * num_classes + digit: f"digit{digit}_colour{colour}"
            for colour in range(colours) for digit in range(num_classes)}


def colour_counts(class_sizes: np.ndarray | list[int], aligned_ratio: float) -> np.ndarray:
    """(classes, colours) int64: how many images of each class get each colour, the official rule
    (make_dataset.py `make_attr_labels`, L25-39): shares `aligned_ratio` on the diagonal and
    (1 - aligned_ratio) / (classes - 1) elsewhere; per class, the cumulative shares times the class size
    rounded (numpy, half to even), and the counts their differences."""
    sizes = np.asarray(class_sizes, dtype=np.int64)
    classes = len(sizes)
    eye = np.eye(classes)
    shares = aligned_ratio * eye + (1 - aligned_ratio) / (classes - 1) * (1 - eye)
    milestones = (sizes[:, np.newaxis] * np.cumsum(shares, axis=1)).round()
    counts = np.diff(milestones, axis=1, prepend=0).astype(np.int64)
    if (counts < 0).any() or not np.array_equal(counts.sum(axis=1), sizes):  # the official loop would fail
        raise ValueError(f"aligned ratio {aligned_ratio}: colour counts {counts.tolist()} are not a partition of "
                         f"the class sizes {sizes.tolist()}")
    return counts


def assign_colours(labels: np.ndarray, aligned_ratio: float, assignment: str = "official",
                   rng: np.random.Generator | None = None, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The colour index of every image (int64, same order as `labels`): per class the `colour_counts`,
    given out in file order, colour 0 first (official, make_dataset.py L41-48), or, with
    `assignment="shuffled"`, the same counts at positions drawn by `rng`."""
    if assignment not in ASSIGNMENTS:
        raise UserError(f"colored_mnist_lff: assignment must be one of {', '.join(ASSIGNMENTS)}, got {assignment!r}")
    labels = np.asarray(labels, dtype=np.int64)
    counts = colour_counts(np.bincount(labels, minlength=num_classes), aligned_ratio)
    colours = np.empty_like(labels)
    for cls in range(num_classes):
        members = np.flatnonzero(labels == cls)
        if assignment == "shuffled":
            members = rng.permutation(members)
        colours[members] = np.repeat(np.arange(num_classes), counts[cls])
    return colours


def colourise(images: np.ndarray, colours: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """(N, 28, 28) uint8 grey digits -> (N, 28, 28, 3) uint8: each image's colour is its mean colour plus
    N(0, std^2) noise per channel, clamped to [0, 1], times the grey value, in float32, truncated to uint8
    (colored_mnist_protocol.py L13-16, make_dataset.py L133-134). Black stays black: only strokes are coloured."""
    images = np.asarray(images)
    noise = rng.standard_normal((len(images), 3), dtype=np.float32)
    rgb = np.clip(COLOURS[colours] + noise * np.float32(std), 0, 1)
    out = np.empty((*images.shape, 3), dtype=np.uint8)
    for start in range(0, len(images), _CHUNK):
        stop = start + _CHUNK
        grey = images[start:stop, ..., np.newaxis].astype(np.float32)
        out[start:stop] = grey * rgb[start:stop, np.newaxis, np.newaxis, :]  # float32 -> uint8 truncates
    return out


def build_split(images: np.ndarray, digits: np.ndarray, aligned_ratio: float, std: float,
                noise_rng: np.random.Generator, assignment: str = "official",
                assignment_rng: np.random.Generator | None = None,
                source_index: np.ndarray | None = None) -> SampleSet:
    """One split: labels = digits, attributes = colours (so groups = colour * 10 + digit), coloured images."""
    digits = np.asarray(digits, dtype=np.int64)
    colours = assign_colours(digits, aligned_ratio, assignment, assignment_rng)
    index = np.arange(len(digits)) if source_index is None else np.asarray(source_index, dtype=np.int64)
    return SampleSet(colourise(images, colours, std, noise_rng), digits, colours, index, NUM_CLASSES)


def noise_std(severity: int | None, colour_std: float | None) -> float:
    """`colour_std` when given, else the official std of `severity` (colored_mnist_protocol.py L12)."""
    if colour_std is not None:
        if colour_std < 0:
            raise UserError(f"colored_mnist_lff: colour_std must be >= 0, got {colour_std}")
        return float(colour_std)
    if severity not in SEVERITY_STD:
        raise UserError(f"colored_mnist_lff: severity must be one of {sorted(SEVERITY_STD)}, got {severity!r}")
    return SEVERITY_STD[severity]


def build_colored_mnist_lff(mnist: dict[str, tuple[np.ndarray, np.ndarray]], *, ratio: float,
                            severity: int = OFFICIAL_SEVERITY, colour_std: float | None = None,
                            val_source: str = "test", val_size: int = 6000, assignment: str = "official",
                            seed: int, train_limit: int | None = None,
                            test_limit: int | None = None) -> dict[str, SampleSet]:
    """train, val and test from `load_mnist`'s arrays (optionally only the first images of each file).

    - `ratio`: bias-aligned share of every training class (0.95, 0.98, 0.99, 0.995 in the paper);
    - `severity` (1..5) picks the official colour noise std, or `colour_std` sets it;
    - test: the MNIST test digits, every colour equally often in every class (the official "valid");
    - `val_source="test"` (official): val is the test split itself (a copy); `"train"`: `val_size` coloured
      training images held out at random, with the training bias; train is the rest, in file order;
    - `assignment`: `"official"` (colours in file order within a class) or `"shuffled"` (same counts);
    - `seed`: the colour noise (and the shuffled assignment and the held-out draw); the official colour
      counts and order do not depend on it.
    """
    if not 0 < ratio <= 1:
        raise UserError(f"colored_mnist_lff: ratio (the bias-aligned share) must be in (0, 1], got {ratio}")
    if val_source not in VAL_SOURCES:
        raise UserError(f"colored_mnist_lff: val_source must be one of {', '.join(VAL_SOURCES)}, got {val_source!r}")
    std = noise_std(severity, colour_std)
    train_noise, test_noise, shuffling, holdout = (np.random.default_rng(s)
                                                   for s in np.random.SeedSequence(seed).spawn(4))
    train_images, train_digits = (a[:train_limit] for a in mnist["train"])
    test_images, test_digits = (a[:test_limit] for a in mnist["test"])
    train = build_split(train_images, train_digits, ratio, std, train_noise, assignment, shuffling)
    test = build_split(test_images, test_digits, UNBIASED_RATIO, std, test_noise, assignment, shuffling)
    if val_source == "test":
        return {"train": train, "val": test.subset(np.arange(len(test))), "test": test}
    if not 0 < val_size < len(train):
        raise UserError(f"colored_mnist_lff: val_size must be between 1 and {len(train) - 1} "
                        f"(the training set has {len(train)} images), got {val_size}")
    held_out = np.sort(holdout.choice(len(train), size=val_size, replace=False))
    keep = np.ones(len(train), dtype=bool)
    keep[held_out] = False
    return {"train": train.subset(np.flatnonzero(keep)), "val": train.subset(held_out), "test": test}


def aligned_share(samples: SampleSet) -> np.ndarray:
    """Per class, the share of its images whose colour is the class's own (bias-aligned), float64 (classes,)."""
    aligned = np.bincount(samples.labels[samples.attributes == samples.labels], minlength=samples.num_classes)
    return aligned / np.maximum(np.bincount(samples.labels, minlength=samples.num_classes), 1)


def _prepare(config: PrepareConfig) -> dict[str, SampleSet]:
    options = config.options
    mnist = load_mnist(options["mnist_dir"], "prepare.colored_mnist_lff.mnist_dir", download_location(config, "mnist"))
    return build_colored_mnist_lff(mnist, ratio=options["ratio"], severity=options["severity"],
                                   val_source=options["val_source"], val_size=options["val_size"],
                                   assignment=options["assignment"], seed=options["seed"],
                                   train_limit=options["train_limit"], test_limit=options["test_limit"])


PARAMS = {  # prepare.colored_mnist_lff.*
    "mnist_dir": FilePath(nullable=True),
    "ratio": Number(0.0, 1.0, exclusive_minimum=True),
    "severity": Int(1, 5),
    "val_source": Choice(options=VAL_SOURCES),
    "val_size": Int(1),
    "assignment": Choice(options=ASSIGNMENTS),
    "seed": Int(0),
    "train_limit": Int(NUM_CLASSES, nullable=True),
    "test_limit": Int(1, nullable=True),
}

SPEC = DatasetSpec(params=PARAMS, name="colored_mnist_lff", num_classes=NUM_CLASSES,
                   group_names=lambda options: group_names(), test_splits=("test",), prepare=_prepare, views=PLAIN,
                   average="unbiased_accuracy", class_names=tuple(f"digit{d}" for d in range(NUM_CLASSES)))
