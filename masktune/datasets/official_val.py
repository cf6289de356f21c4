"""The official validation draw of MaskTune's selective-classification datasets (CIFAR-10, SVHN, Cats vs Dogs).

aliasgharkhani/Masktune src/methods/cifar10_train.py L44-53, svhn_train.py L33-42 and catsvsdogs_train.py
L34-42 all hold out the same 20% of the training set:
    indices = list(range(num_train)); split = int(np.floor(0.2 * num_train))
    np.random.seed(50); np.random.shuffle(indices)
    train_idx, val_idx = indices[split:], indices[:split]
(each then caches the draw in `train_val_indices.npy` and reuses it when present, L41-43 / L30-32 / L31-33).

The indices are positions in the official *listing* of the training images, which each dataset class builds
by re-reading the PNG/JPEG files it wrote into one folder per class: class folders in sorted order, the files
of a class in `glob` order (src/datasets/cifar10.py L46-61, svhn.py L43-58, catsvsdogs.py L75-90). Classes
0..9 (0, 1) sort the same as strings, so the listing is grouped by class; `glob` returns a class's files in
the file system's order, which no one can reproduce. `class_listing` replaces it by the files' own order (the
index in the distributed file: the official PNG is named after it), so the draw is the official one exactly
wherever the file system lists files in that order, and the same rule everywhere else.

`np.random.RandomState(seed).permutation(n)` is the permutation `np.random.seed(seed); np.random.shuffle(list)`
gives (tests/test_paper_datasets.py checks it), without touching numpy's global generator.
"""
from __future__ import annotations

import numpy as np

from masktune.errors import UserError


def class_listing(labels: np.ndarray) -> np.ndarray:
    """Row order of the official listing: the rows of class 0, then class 1, ..., each in file order."""
    return np.argsort(np.asarray(labels), kind="stable")


def official_validation(labels: np.ndarray, fraction: float, seed: int, param: str) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) of a training set in file order, each sorted: the official draw over the class
    listing (module docstring). `param`: the params section, named when the fraction leaves a split empty."""
    n = len(labels)
    split = int(np.floor(fraction * n))
    if not 0 < split < n:
        raise UserError(f"params.yaml: {param}.val_fraction {fraction} of {n} training images leaves "
                        f"{'no validation' if split <= 0 else 'no training'} image")
    listing = class_listing(labels)
    positions = np.random.RandomState(seed).permutation(n)
    return np.sort(listing[positions[split:]]), np.sort(listing[positions[:split]])
