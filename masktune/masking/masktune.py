"""MaskTune's masker (Asgari et al., NeurIPS 2022; official src/utils/masking.py): threshold each training
image's saliency map at mean + threshold_std * std of its positive values (masktune.masking.rules) and mask
the pixels above it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masktune.config.fields import Int, Number
from masktune.config.params import param
from masktune.data.masks import write_masks as write_masks_file
from masktune.data.views import mask_to_raw
from masktune.masking import chunk_rows
from masktune.masking.rules import saliency_masks
from masktune.methods import Spec
from masktune.saliency.file import iter_full_maps, saliency_layout


@dataclass(frozen=True, kw_only=True)
class MaskTuneMaskConfig:
    threshold_std: float = param("masktune.threshold_std", Number(0.0))
    examples_per_group: int = param("mask_examples_per_group", Int(1, 16))


SPEC = Spec(name="masktune", role="masking", family="masking", title="MaskTune (Asgari et al., 2022)",
            configs={"materialize_masked_dataset": MaskTuneMaskConfig})


def write_masks(config: MaskTuneMaskConfig, saliency: str | Path, out: str | Path, rows: int, size: tuple[int, int],
                attrs: dict) -> np.ndarray:
    """Threshold each input-resolution map at mean + threshold_std * std of its positive values, stretch the
    mask to `size` (nearest, as the official cv2 resize; the identity when the saliency saw images of that
    size, as in the pipeline) and store it packed. Returns the masked fraction per image."""
    _, input_size = saliency_layout(saliency, rows)
    chunks = ((first, mask_to_raw(saliency_masks(maps, config.threshold_std), *size, alignment="stretch"))
              for first, maps in iter_full_maps(saliency, rows, chunk_rows(*input_size)))
    return write_masks_file(out, rows, size, chunks, attrs)
