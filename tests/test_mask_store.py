"""Bit-packed masks: exact round trip, the same masked images as masking stored copies, chunk-independent."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from masktune import masking
from masktune.data.masks import MaskSource, apply_masks, pack_masks, read_masks, unpack_masks
from masktune.data.views import Geometry, mask_to_raw
from masktune.errors import UserError
from masktune.io.hdf5 import read_rows, write_arrays
from masktune.masking.masktune import MaskTuneMaskConfig
from masktune.masking.masktune import write_masks as masktune_masks
from masktune.masking.randmask import RandMaskMaskConfig
from masktune.masking.randmask import write_masks as randmask_masks
from masktune.masking.rules import cutout_masks, saliency_masks
from masktune.saliency.xgradcam import full_resolution


def write_saliency_masks(saliency, out, rows, size, n_std, attrs):
    return masktune_masks(MaskTuneMaskConfig(threshold_std=n_std, examples_per_group=4), saliency, out, rows, size, attrs)


def write_random_masks(out, rows, size, sides, seed, attrs):
    return randmask_masks(RandMaskMaskConfig(cutout_sides=sides, seed=seed, examples_per_group=4), None, out, rows, size,
                          attrs)


def _saliency_file(path, n=50, feature=(7, 7), input_size=(30, 30), seed=0) -> torch.Tensor:
    """A saliency file of random non-negative feature maps; returns their full-resolution maps."""
    rng = np.random.default_rng(seed)
    cams = np.maximum(rng.normal(size=(n, *feature)), 0).astype(np.float32)
    cams[3] = 0  # a map with no positive value: masks nothing
    write_arrays(path, {"maps": cams, "predicted": rng.integers(0, 2, n)},
                 attrs={"method": "xgradcam", "input_size": list(input_size), "precision": "float32"})
    return full_resolution(torch.from_numpy(cams), input_size)


@pytest.mark.parametrize("size", [(28, 28), (5, 3), (224, 224)])
def test_pack_round_trip_is_exact(size):
    masks = np.random.default_rng(1).random((6, *size)) > 0.7
    packed = pack_masks(masks)
    assert packed.shape == (6, -(-size[0] * size[1] // 8)) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_masks(packed, *size), masks)


def test_saliency_masks_file_gives_the_images_masked_copies_would(tmp_path):
    maps = _saliency_file(tmp_path / "saliency.h5")
    images = np.random.default_rng(2).integers(1, 256, (50, 60, 45, 3), dtype=np.uint8)  # stored size differs
    fraction = write_saliency_masks(tmp_path / "saliency.h5", tmp_path / "masks.h5", 50, (60, 45), 2.0, {})
    official = mask_to_raw(saliency_masks(maps.numpy(), 2.0), 60, 45, alignment="stretch")  # cv2 nearest resize
    expected = apply_masks(images, official)  # the official path: masked copies
    for alignment in ("crop", "stretch"):  # the stored image is the view: both are the identity
        source = MaskSource(tmp_path / "masks.h5", 50, (60, 45), Geometry(), alignment, in_memory=alignment == "crop")
        np.testing.assert_array_equal(source.apply(images, np.arange(50)), expected)
        np.testing.assert_array_equal(source.apply(images[[7, 2]], np.array([7, 2])), expected[[7, 2]])
    np.testing.assert_allclose(fraction, (expected == 0).all(axis=-1).reshape(50, -1).mean(axis=1))
    assert fraction[3] == 0 and 0 < fraction.mean() < 0.2


def test_chunking_does_not_change_the_file(tmp_path, monkeypatch):
    _saliency_file(tmp_path / "saliency.h5")
    write_saliency_masks(tmp_path / "saliency.h5", tmp_path / "a.h5", 50, (30, 30), 2.0, {})
    write_random_masks(tmp_path / "ra.h5", 50, (30, 30), (4, 9), 0, {})
    monkeypatch.setattr(masking, "PIXELS_PER_CHUNK", 7 * 900)  # 7 images at a time
    write_saliency_masks(tmp_path / "saliency.h5", tmp_path / "b.h5", 50, (30, 30), 2.0, {})
    write_random_masks(tmp_path / "rb.h5", 50, (30, 30), (4, 9), 0, {})
    digest = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in
              ("a.h5", "b.h5", "ra.h5", "rb.h5")}
    assert digest["a.h5"] == digest["b.h5"] and digest["ra.h5"] == digest["rb.h5"]


def test_random_masks_are_the_seeded_cutout_squares(tmp_path):
    fraction = write_random_masks(tmp_path / "masks.h5", 40, (28, 28), (3, 10), 5, {})
    expected = cutout_masks(40, 28, 28, (3, 10), np.random.default_rng(5))
    np.testing.assert_array_equal(read_masks(tmp_path / "masks.h5", 40, (28, 28)), expected)
    np.testing.assert_allclose(fraction, expected.reshape(40, -1).mean(axis=1))


def test_masks_for_other_data_are_refused(tmp_path):
    write_random_masks(tmp_path / "masks.h5", 40, (28, 28), (3, 10), 5, {})
    with pytest.raises(UserError, match="masks for 40 images of \\(28, 28\\), but the data has 41"):
        read_masks(tmp_path / "masks.h5", 41, (28, 28))
    _saliency_file(tmp_path / "saliency.h5")
    with pytest.raises(UserError, match="saliency.h5: not a masks file"):
        read_masks(tmp_path / "saliency.h5", 50, (30, 30))


def test_read_rows_returns_any_order_with_repeats(tmp_path):
    array = np.arange(1000 * 3).reshape(1000, 3)
    write_arrays(tmp_path / "a.h5", {"x": array})
    index = np.array([999, 0, 512, 0, 3])
    np.testing.assert_array_equal(read_rows(tmp_path / "a.h5", "x", index), array[index])
    assert read_rows(tmp_path / "a.h5", "x", np.array([], dtype=int)).shape == (0, 3)
