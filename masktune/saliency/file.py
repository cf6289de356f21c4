"""The saliency file (`data/saliency.h5`), read side: what masking and the figures read.

Storage design (measured in bench/storage_scaling.py, numbers in the README): the file holds the
XGradCAM maps at *feature-map resolution*, before any scaling (`cams`, float32 (N, h, w): 8 x 8 for
SmallCNN, 7 x 7 for ResNet-50 at 224 x 224), and the predicted class of every image. The
input-resolution maps the masks are thresholded on are a fixed function of these
(`xgradcam.full_resolution`), recomputed exactly where needed, so the file costs 196 bytes per
ResNet-50 image instead of 200 KB for float32 maps at 224 x 224 (CelebA: 32 MB instead of 33 GB).
`masktune.saliency.compute` writes it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from masktune.errors import UserError
from masktune.io.hdf5 import STREAM_CACHE_BYTES, open_h5, read_rows
from masktune.saliency.xgradcam import full_resolution


def saliency_layout(path: str | Path, rows: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(feature-map size, input size) of a saliency file, checked to hold `rows` maps."""
    with open_h5(path) as f:
        if "cams" not in f or "input_size" not in f.attrs:
            raise UserError(f"{path}: not a saliency file of this project (no 'cams'); rerun compute_saliency")
        shape = f["cams"].shape
        if len(shape) != 3 or shape[0] != rows:
            raise UserError(f"{path}: 'cams' has shape {shape}, expected ({rows}, h, w) for the {rows} "
                            "training images: saliency and data disagree")
        return (int(shape[1]), int(shape[2])), tuple(int(s) for s in f.attrs["input_size"])


def iter_full_maps(path: str | Path, rows: int, chunk: int):
    """Yield (first row, input-resolution maps (B, H, W) float32 tensor), `chunk` rows at a time."""
    _, input_size = saliency_layout(path, rows)
    with open_h5(path, STREAM_CACHE_BYTES) as f:
        for first in range(0, rows, chunk):
            cams = torch.from_numpy(f["cams"][first:first + chunk])
            yield first, full_resolution(cams, input_size)


def full_maps_at(path: str | Path, rows: int, index: np.ndarray) -> np.ndarray:
    """Input-resolution maps of the rows `index` only (for figures)."""
    _, input_size = saliency_layout(path, rows)
    return full_resolution(torch.from_numpy(read_rows(path, "cams", index)), input_size).numpy()
