"""The saliency file (`data/saliency.h5`, ExMap's `data/<name>/heatmaps.h5`), read side: what masking, ExMap
and the figures read. Written by `masktune.saliency.compute`, for any method (attribute `method`): `maps`
as the method gives them, and the predicted class of every image.

Storage design (measured in bench/storage_scaling.py, numbers in the README): XGradCAM's maps are held at
*feature-map resolution*, before any scaling (`maps`, float32 (N, h, w): 8 x 8 for
SmallCNN, 7 x 7 for ResNet-50 at 224 x 224), and the predicted class of every image. The
input-resolution maps the masks are thresholded on are a fixed function of these
(`xgradcam.full_resolution`), recomputed exactly where needed, so the file costs 196 bytes per
ResNet-50 image instead of 200 KB for float32 maps at 224 x 224 (CelebA: 32 MB instead of 33 GB).
LRP's relevance is input-resolution per channel (N, C, H, W).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from masktune.errors import UserError
from masktune.io.hdf5 import STREAM_CACHE_BYTES, open_h5, read_attrs, read_rows
from masktune.saliency.xgradcam import full_resolution


def saliency_layout(path: str | Path, rows: int) -> tuple[tuple[int, ...], tuple[int, int]]:
    """(stored map shape, input size) of a saliency file, checked to hold `rows` maps."""
    with open_h5(path) as f:
        if "maps" not in f or "input_size" not in f.attrs:
            raise UserError(f"{path}: not a saliency file of this project (no 'maps'); rerun the stage that writes it")
        shape = f["maps"].shape
        if len(shape) not in (3, 4) or shape[0] != rows:
            raise UserError(f"{path}: 'maps' has shape {shape}, expected ({rows}, ...) for the {rows} images: saliency "
                            "and data disagree")
        return tuple(int(s) for s in shape[1:]), tuple(int(s) for s in f.attrs["input_size"])


def input_resolution(maps: torch.Tensor, method: str, size: tuple[int, int]) -> torch.Tensor:
    """Stored maps at input resolution: XGradCAM's feature-map maps scaled and resized as the library does
    (`xgradcam.full_resolution`, (B, H, W)); LRP's relevance is stored at input resolution, (B, C, H, W)."""
    return full_resolution(maps, size) if method == "xgradcam" else maps.float()


def mask_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) maps to threshold into masks: per-channel relevance (LRP's) summed over the channels, as
    zennit's heatmaps show it."""
    return maps.sum(dim=1) if maps.ndim == 4 else maps


def iter_full_maps(path: str | Path, rows: int, chunk: int):
    """Yield (first row, input-resolution maps (B, H, W) float32 tensor, channels summed), `chunk` rows at a time."""
    _, input_size = saliency_layout(path, rows)
    method = str(read_attrs(path).get("method", "xgradcam"))
    with open_h5(path, STREAM_CACHE_BYTES) as f:
        for first in range(0, rows, chunk):
            maps = torch.from_numpy(f["maps"][first:first + chunk])
            yield first, mask_maps(input_resolution(maps, method, input_size))


def full_maps_at(path: str | Path, rows: int, index: np.ndarray) -> np.ndarray:
    """Input-resolution maps (channels summed) of the rows `index` only (for figures)."""
    _, input_size = saliency_layout(path, rows)
    method = str(read_attrs(path).get("method", "xgradcam"))
    maps = torch.from_numpy(read_rows(path, "maps", index))
    return mask_maps(input_resolution(maps, method, input_size)).numpy()
