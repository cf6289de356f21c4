"""Which pixels to mask: MaskTune's saliency threshold, and RandMask's random squares.

MaskTune (official src/utils/masking.py, `mask_heatmap_using_threshold`): per image, the threshold
is mean + 2 * std (population std, as np.nanstd) of the *positive* saliency values; pixels above it
are masked. An image with no positive saliency gets no mask (the official NaN threshold compares
False everywhere). Applying a mask to an image is the data contract's business
(`masktune.data.masks.MaskSource`): masked pixels become 0 in every channel, as the official
`apply_mask_and_save_individual_image_in_png` writes them.

RandMask (the paper's random-masking baseline): the official MNIST code feeds the finetune with
`Cutout(1, [2, ..., 14])` (src/methods/mnist_train.py, use_random_masking): one square hole per
image whose side is drawn from 2..14 and whose centre is uniform over the image, clipped at the
borders, as in DeVries & Taylor's Cutout. Ours draws them from a seeded generator.
"""
from __future__ import annotations

import numpy as np
import torch


def saliency_thresholds(maps: np.ndarray | torch.Tensor, n_std: float = 2.0) -> np.ndarray:
    """Per-map mean + n_std * std of the positive values (NaN for a map with none), in float64."""
    return _thresholds(torch.as_tensor(maps), n_std).numpy()


def _thresholds(maps: torch.Tensor, n_std: float) -> torch.Tensor:
    values = maps.double().flatten(1)
    positive = values > 0
    count = positive.sum(dim=1)
    mean = torch.where(positive, values, 0.0).sum(dim=1) / count
    deviation = torch.where(positive, values - mean[:, None], 0.0)
    return mean + n_std * (deviation.square().sum(dim=1) / count).sqrt()


def saliency_masks(maps: np.ndarray | torch.Tensor, n_std: float = 2.0, chunk: int = 4096) -> np.ndarray:
    """Boolean masks (N, H, W): True where the map is above its image's threshold."""
    maps = torch.as_tensor(maps)
    masks = np.empty(tuple(maps.shape), dtype=bool)
    for start in range(0, len(maps), chunk):
        part = maps[start:start + chunk]
        masks[start:start + chunk] = (part > _thresholds(part, n_std)[:, None, None]).numpy()
    return masks


def cutout_boxes(n: int, height: int, width: int, side_range: tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """RandMask's squares: (n, 4) rows (y0, y1, x0, x1), side uniform in side_range (inclusive),
    centre uniform over the image, clipped at the borders. All drawn up front (32 bytes an image), so
    the squares do not depend on how the masks are later chunked."""
    sides = rng.integers(side_range[0], side_range[1] + 1, size=n)
    centre_y = rng.integers(0, height, size=n)
    centre_x = rng.integers(0, width, size=n)
    return np.stack([np.clip(centre_y - sides // 2, 0, height), np.clip(centre_y + sides // 2, 0, height),
                     np.clip(centre_x - sides // 2, 0, width), np.clip(centre_x + sides // 2, 0, width)], axis=1)


def box_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean masks (n, H, W) of the boxes from `cutout_boxes`."""
    rows, cols = np.arange(height), np.arange(width)
    in_rows = (rows[None] >= boxes[:, 0, None]) & (rows[None] < boxes[:, 1, None])
    in_cols = (cols[None] >= boxes[:, 2, None]) & (cols[None] < boxes[:, 3, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def cutout_masks(n: int, height: int, width: int, side_range: tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """RandMask: one Cutout square per image, side uniform in side_range (inclusive)."""
    return box_masks(cutout_boxes(n, height, width, side_range, rng), height, width)
