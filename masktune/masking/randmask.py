"""RandMask, MaskTune's random-masking baseline: one seeded Cutout square per image (the official MNIST code
feeds the finetune `Cutout(1, [2, ..., 14])`, src/methods/mnist_train.py; masktune.masking.rules)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masktune.config.fields import SEED, Int, IntList
from masktune.config.params import param
from masktune.data.masks import write_masks as write_masks_file
from masktune.masking import chunk_rows
from masktune.masking.rules import box_masks, cutout_boxes
from masktune.methods import Spec


@dataclass(frozen=True, kw_only=True)
class RandMaskMaskConfig:
    cutout_sides: tuple[int, int] = param("randmask.cutout_sides", IntList(length=2, minimum=1, maximum=10_000,
                                                                           ascending=True))
    seed: int = param("randmask.seed", SEED)
    examples_per_group: int = param("mask_examples_per_group", Int(1, 16))


SPEC = Spec(name="randmask", role="masking", family="masking", title="RandMask (MaskTune's baseline)",
            configs={"materialize_masked_dataset": RandMaskMaskConfig})


def write_masks(config: RandMaskMaskConfig, saliency: str | Path, out: str | Path, rows: int, size: tuple[int, int],
                attrs: dict) -> np.ndarray:
    """One seeded Cutout square per image (the saliency is not read), stored packed; returns each image's
    masked fraction."""
    boxes = cutout_boxes(rows, *size, config.cutout_sides, np.random.default_rng(config.seed))
    step = chunk_rows(*size)
    chunks = ((first, box_masks(boxes[first:first + step], *size)) for first in range(0, rows, step))
    return write_masks_file(out, rows, size, chunks, attrs)
