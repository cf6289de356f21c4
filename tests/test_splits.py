"""The data contract on real on-disk formats: what the finetune's model receives is the raw image with
the masked pixels set to 0 (under `crop` and `stretch`), splits are deterministic with DataLoader
workers, and both storages serve the same items."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures_datasets import make_waterbirds

from masktune.data.masks import write_masks
from masktune.data.prepared import EncodedImages, PreparedFile, write_prepared
from masktune.data.samples import SampleSet
from masktune.data.splits import EncodedSplit, PixelSplit, mask_source, masking_view_size, open_split, to_input
from masktune.datasets import DATASETS
from masktune.datasets.waterbirds import GROUP_NAMES, read_waterbirds

cv2 = pytest.importorskip("cv2")
transforms = pytest.importorskip("torchvision.transforms")
CPU = torch.device("cpu")
VIEWS = DATASETS["waterbirds"].views  # Resize((256, 256)), CenterCrop(224): the official masking view


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("waterbirds")
    splits = read_waterbirds(make_waterbirds(folder / "raw"))
    write_prepared(folder / "prepared.h5", splits,
                   {"dataset": "waterbirds", "num_classes": 2, "group_names": json.dumps(GROUP_NAMES)})
    return PreparedFile(folder / "prepared.h5")


def _masks(path, prepared, view_masks: np.ndarray):
    n = prepared.length("train")
    write_masks(path, n, masking_view_size(prepared, VIEWS), [(0, np.broadcast_to(view_masks, (n, 224, 224)))], {})
    return path


def _covered(raw: int) -> np.ndarray:
    """Raw rows (or columns) whose centre the masking view's top-left quadrant covers, by hand:
    view v = (u + 0.5) * 256 / raw - 16 (resize to 256, crop at 16), quadrant v in [0, 112)."""
    v = (np.arange(raw) + 0.5) * 256 / raw - 16
    return (v >= 0) & (v < 112)


@pytest.mark.parametrize("alignment", ["crop", "stretch"])
def test_finetune_input_is_the_raw_image_with_its_masked_pixels_zeroed(prepared, tmp_path, alignment):
    quadrant = np.zeros((224, 224), dtype=bool)
    quadrant[:112, :112] = True
    source = mask_source(prepared, VIEWS, _masks(tmp_path / "masks.h5", prepared, quadrant), alignment)
    split = EncodedSplit(prepared, "train", transforms.PILToTensor(), 0, masks=source)  # the pixels a transform gets
    originals = EncodedImages(prepared.path, "train")
    sizes = set()
    for i in range(len(split)):
        image, label, group, index = split[i]
        original = np.asarray(originals[i])
        height, width = original.shape[:2]
        sizes.add((height, width))
        if alignment == "crop":  # through the exact geometry: the crop's border band stays unmasked
            region = _covered(height)[:, None] & _covered(width)[None, :]
        else:  # the official cv2.resize(mask, (W, H), INTER_NEAREST) stretched over the raw image
            region = cv2.resize(quadrant.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) == 1
        received = image.permute(1, 2, 0).numpy()
        assert (index, label, group) == (i, split.labels[i], split.groups[i])
        assert region.any() and (~region).any()
        assert (received[region] == 0).all()
        np.testing.assert_array_equal(received[~region], original[~region])
    assert len(sizes) > 1  # images of several widths were checked


def test_a_full_mask_reaches_the_model_through_the_official_train_transform(prepared, tmp_path):
    source = mask_source(prepared, VIEWS, _masks(tmp_path / "m.h5", prepared, np.ones((224, 224), bool)), "stretch")
    split = open_split(prepared, "train", VIEWS, "train", masks=source)
    inputs, _ = next(split.batches(8, CPU, torch.Generator().manual_seed(0)))
    zero = ((0 - torch.tensor(VIEWS.mean)) / torch.tensor(VIEWS.std))[None, :, None, None]
    torch.testing.assert_close(inputs, zero.expand_as(inputs), rtol=0, atol=1e-6)


def _epoch(split, seed: int):
    batches = list(split.batches(5, CPU, torch.Generator().manual_seed(seed)))
    return torch.cat([inputs for inputs, _ in batches]), np.concatenate([index for _, index in batches])


def test_random_train_views_are_deterministic_with_two_workers(prepared):
    split = open_split(prepared, "train", VIEWS, "train", workers=2)
    (a, order_a), (b, order_b), (c, order_c) = _epoch(split, 0), _epoch(split, 0), _epoch(split, 1)
    np.testing.assert_array_equal(order_a, order_b)
    assert torch.equal(a, b)
    assert sorted(order_a) == list(range(len(split)))  # a permutation: every image once
    assert not np.array_equal(order_a, order_c) and not torch.equal(a, c)


def test_ordered_batches_stream_the_masking_view_in_row_order(prepared):
    split = open_split(prepared, "train", VIEWS, "masking")
    first, inputs = zip(*split.ordered_batches(4, CPU, start=3, workers=2))
    assert list(first) == list(range(3, len(split), 4))
    stacked = torch.cat(inputs)
    assert stacked.shape == (len(split) - 3, 3, 224, 224)
    torch.testing.assert_close(stacked[0], split[3][0], rtol=0, atol=0)


def test_pixel_items_batches_and_streams_agree():
    rng = np.random.default_rng(0)
    samples = SampleSet(rng.integers(0, 256, (10, 6, 5, 3), dtype=np.uint8), rng.integers(0, 2, 10),
                        rng.integers(0, 2, 10), np.arange(10))
    split = PixelSplit.from_samples(samples)
    expected = to_input(samples.images, CPU)
    items = torch.stack([split[i][0] for i in range(10)])
    torch.testing.assert_close(items, expected, rtol=0, atol=0)
    assert [split[i][1:] for i in (0, 9)] == [(samples.labels[0], samples.groups[0], 0),
                                               (samples.labels[9], samples.groups[9], 9)]
    inputs, index = next(split.batches(10, CPU, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(inputs, expected[torch.from_numpy(index)], rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([x for _, x in split.ordered_batches(3, CPU)]), expected, rtol=0, atol=0)
