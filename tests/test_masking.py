"""MaskTune's threshold, the masks it applies, and RandMask's squares, checked by hand and by cv2."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from masktune.data.masks import apply_masks
from masktune.data.views import mask_to_raw
from masktune.masking.rules import cutout_masks, saliency_masks, saliency_thresholds


def official_threshold_masks(heat_maps: np.ndarray) -> np.ndarray:
    """The official rule, written from its description: nan-mean + 2 nan-std of positive values."""
    positive = np.where(heat_maps > 0, heat_maps, np.nan)
    with _quiet():
        threshold = np.nanmean(positive, axis=(1, 2)) + 2 * np.nanstd(positive, axis=(1, 2))
    return heat_maps > threshold[:, None, None]


class _quiet:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_threshold_on_a_hand_computed_map():
    # Positive values 0.1, 0.2, 0.3, 0.4, 1.0: mean 0.4, population std sqrt(0.1) = 0.31623.
    saliency = np.array([[[0.0, 0.1, 0.2], [0.3, 0.4, 1.0], [0.0, 0.0, 0.0]]], dtype=np.float32)
    threshold = saliency_thresholds(saliency)[0]
    assert threshold == pytest.approx(0.4 + 2 * np.sqrt(0.1), abs=1e-7)  # 1.03246
    assert not saliency_masks(saliency).any()  # nothing reaches 1.03246
    saliency[0, 2, 2] = 0.05   # a sixth positive value: mean 2.05 / 6, std sqrt(0.602083 / 6)
    assert saliency_thresholds(saliency)[0] == pytest.approx(0.341667 + 2 * 0.316776, abs=1e-5)
    assert saliency_masks(saliency)[0].tolist() == [[False] * 3, [False, False, True], [False] * 3]


def test_map_without_positive_values_masks_nothing():
    saliency = np.zeros((2, 5, 5), dtype=np.float32)
    saliency[1, 0, 0] = 1.0
    assert np.isnan(saliency_thresholds(saliency)[0])
    masks = saliency_masks(saliency)
    assert not masks[0].any()
    assert not masks[1].any()  # a single positive value equals its own threshold: not above it


def test_agrees_with_the_official_rule_on_random_maps():
    rng = np.random.default_rng(0)
    maps = np.clip(rng.normal(0.2, 0.3, size=(200, 28, 28)), 0, 1).astype(np.float32)
    np.testing.assert_array_equal(saliency_masks(maps, chunk=64), official_threshold_masks(maps))


def test_stretched_masks_zero_every_channel_like_the_official_cv2_resize_and_multiply():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, size=(3, 30, 45, 3), dtype=np.uint8)
    masks = rng.random((3, 7, 9)) > 0.6
    masked = apply_masks(images, mask_to_raw(masks, 30, 45, alignment="stretch"))
    for image, mask, out in zip(images, masks, masked):
        big = cv2.resize(mask.astype(np.uint8), dsize=(45, 30), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(out, image * (1 - big)[..., None])  # the official multiply


def test_apply_refuses_masks_of_another_size_or_count():
    images = np.ones((2, 5, 5, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="masks of"):
        apply_masks(images, np.zeros((2, 4, 5), dtype=bool))
    with pytest.raises(Exception, match="1 masks for 2 images"):
        apply_masks(images, np.zeros((1, 5, 5), dtype=bool))


def test_cutout_squares_are_seeded_and_within_the_side_range():
    a = cutout_masks(500, 28, 28, (2, 14), np.random.default_rng(3))
    b = cutout_masks(500, 28, 28, (2, 14), np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    for mask in a:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert len(rows) <= 14 and len(cols) <= 14
        assert mask.sum() == len(rows) * len(cols)  # one axis-aligned rectangle (a clipped square)
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
    areas = a.reshape(500, -1).sum(1)
    assert areas.max() == 14 * 14 and (areas < 14 * 14).mean() > 0.5  # full squares and clipped ones
