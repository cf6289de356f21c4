"""The `materialize_masked_dataset` step: the mask of every training image, written to the masks file
(`masktune.data.masks` describes the file, reads it and applies the masks), streamed in chunks of about
a million pixels, so memory does not grow with the number of images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from masktune.data.masks import write_masks
from masktune.data.views import mask_to_raw
from masktune.masking.rules import box_masks, cutout_boxes, saliency_masks
from masktune.saliency.file import iter_full_maps, saliency_layout

PIXELS_PER_CHUNK = 1 << 20  # full-resolution maps thresholded at a time (float64 intermediates: ~30 MB)


def _chunk_rows(height: int, width: int) -> int:
    return max(1, PIXELS_PER_CHUNK // (height * width))


def write_saliency_masks(saliency: str | Path, out: str | Path, rows: int, size: tuple[int, int],
                         n_std: float, attrs: dict) -> np.ndarray:
    """MaskTune: threshold each input-resolution map at mean + n_std * std of its positive values,
    stretch the mask to `size` (nearest, as the official cv2 resize; the identity when the saliency saw
    images of that size, as in the pipeline) and store it packed. Returns the masked fraction per image."""
    _, input_size = saliency_layout(saliency, rows)
    chunks = ((first, mask_to_raw(saliency_masks(maps, n_std), *size, alignment="stretch"))
              for first, maps in iter_full_maps(saliency, rows, _chunk_rows(*input_size)))
    return write_masks(out, rows, size, chunks, attrs)


def write_random_masks(out: str | Path, rows: int, size: tuple[int, int], sides: tuple[int, int],
                       seed: int, attrs: dict) -> np.ndarray:
    """RandMask: one seeded Cutout square per image."""
    boxes = cutout_boxes(rows, *size, sides, np.random.default_rng(seed))
    step = _chunk_rows(*size)
    chunks = ((first, box_masks(boxes[first:first + step], *size)) for first in range(0, rows, step))
    return write_masks(out, rows, size, chunks, attrs)


def write_method_masks(method: str, config, saliency: str | Path, out: str | Path, rows: int,
                       size: tuple[int, int], attrs: dict) -> np.ndarray:
    """The masks of masking method `method` (its stage's config): MaskTune's saliency threshold
    (Asgari et al., NeurIPS 2022, src/utils/masking.py) or the paper's RandMask baseline (one Cutout
    square per image, src/utils/cutout.py). Returns each image's masked pixel fraction."""
    if method == "masktune":
        return write_saliency_masks(saliency, out, rows, size, config.threshold_std, attrs)
    if method == "randmask":
        return write_random_masks(out, rows, size, config.cutout_sides, config.seed, attrs)
    raise ValueError(f"unknown masking method {method!r}")
