"""Biased MNIST built from the real MNIST files matches the official construction exactly."""
from __future__ import annotations

import numpy as np
import pytest

from masktune.datasets.biased_mnist import build_biased_mnist, build_biased_split

RED = (255, 0, 0)


@pytest.fixture(scope="module")
def official_train(mnist):
    images, digits = mnist["train"]
    return build_biased_split(images, digits, 0.01, 4, RED), digits


@pytest.fixture(scope="module")
def splits(mnist):
    return build_biased_mnist(mnist, conflicting_ratio=0.01, square_size=4, color=RED,
                              placement="official", val_size=12000, seed=0)


def test_full_training_set_has_the_official_square_counts(official_train):
    samples, digits = official_train
    class0, class1 = samples.labels == 0, samples.labels == 1
    assert (class0.sum(), class1.sum()) == (30596, 29404)
    assert samples.attributes[class0].sum() == 30290  # round(0.99 * 30596)
    assert samples.attributes[class1].sum() == 294    # round(0.01 * 29404)
    # Grouped by digit, the first images of each class get the square: the 306 class-0 images
    # left without it are all 4s, and the 294 class-1 images with it are all 5s.
    source_digits = digits[samples.source_index]
    assert set(source_digits[class0 & (samples.attributes == 0)]) == {4}
    assert (class0 & (samples.attributes == 0)).sum() == 306
    assert set(source_digits[class1 & (samples.attributes == 1)]) == {5}


def test_order_labels_and_groups_follow_the_official_code(official_train, mnist):
    samples, digits = official_train
    source_digits = digits[samples.source_index]
    assert np.all(np.diff(source_digits) >= 0)  # grouped 0, 1, ..., 9 as filter_data_by_label
    np.testing.assert_array_equal(samples.labels, (source_digits >= 5).astype(int))
    np.testing.assert_array_equal(samples.groups, 2 * samples.attributes + samples.labels)
    assert np.array_equal(np.sort(samples.source_index), np.arange(60000))


def test_pixels_are_the_grey_digit_in_three_channels_plus_a_red_square(official_train, mnist):
    samples, _ = official_train
    grey = mnist["train"][0][samples.source_index]
    square = samples.attributes == 1
    assert samples.images.shape == (60000, 28, 28, 3) and samples.images.dtype == np.uint8
    np.testing.assert_array_equal(samples.images[square, :4, :4], np.broadcast_to(RED, (square.sum(), 4, 4, 3)))
    outside = np.ones((28, 28), dtype=bool)
    outside[:4, :4] = False
    for channel in range(3):
        np.testing.assert_array_equal(samples.images[:, outside, channel], grey[:, outside])
        np.testing.assert_array_equal(samples.images[~square, :4, :4, channel], grey[~square, :4, :4])


def test_splits_sizes_and_test_bias(splits, mnist):
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 48000, "val": 12000, "test_original": 10000, "test_biased": 10000}
    train, val = splits["train"], splits["val"]
    # The validation draw happens after the squares: both splits carry the training bias.
    assert train.attributes[train.labels == 0].sum() + val.attributes[val.labels == 0].sum() == 30290
    assert train.attributes[train.labels == 1].sum() + val.attributes[val.labels == 1].sum() == 294
    assert set(train.source_index).isdisjoint(val.source_index)
    # Seeded draw (prepare.seed 0): group sizes y0/y1 without square, y0/y1 with it.
    assert np.bincount(train.groups, minlength=4).tolist() == [248, 23273, 24252, 227]
    assert np.bincount(val.groups, minlength=4).tolist() == [58, 5837, 6038, 67]
    original, biased = splits["test_original"], splits["test_biased"]
    assert original.attributes.sum() == 0
    assert (original.labels == 0).sum() == 5139 and (original.labels == 1).sum() == 4861
    np.testing.assert_array_equal(biased.attributes, biased.labels)  # every class-1 image, no class-0
    assert (biased.images[biased.labels == 1, :4, :4] == RED).all()


def test_seeded_validation_and_random_placement(mnist):
    kwargs = {"conflicting_ratio": 0.01, "square_size": 4, "color": RED, "val_size": 12000}
    a = build_biased_mnist(mnist, placement="random", seed=1, **kwargs)
    b = build_biased_mnist(mnist, placement="random", seed=1, **kwargs)
    c = build_biased_mnist(mnist, placement="random", seed=2, **kwargs)
    np.testing.assert_array_equal(a["val"].source_index, b["val"].source_index)
    np.testing.assert_array_equal(a["train"].attributes, b["train"].attributes)
    assert not np.array_equal(a["val"].source_index, c["val"].source_index)
    digits = mnist["train"][1]
    train = a["train"]
    total = {cls: train.attributes[train.labels == cls].sum() + a["val"].attributes[a["val"].labels == cls].sum()
             for cls in (0, 1)}
    assert total == {0: 30290, 1: 294}  # same counts as the official placement...
    no_square_class0 = digits[train.source_index[(train.labels == 0) & (train.attributes == 0)]]
    assert len(set(no_square_class0)) == 5  # ...but spread over all digits, not only 4s


def test_limits_take_the_first_images_of_each_file(mnist):
    splits = build_biased_mnist(mnist, conflicting_ratio=0.01, square_size=4, color=RED,
                                placement="official", val_size=100, seed=0, train_limit=1000,
                                test_limit=300)
    assert len(splits["train"]) == 900 and len(splits["val"]) == 100
    assert len(splits["test_biased"]) == 300
    assert max(splits["train"].source_index.max(), splits["val"].source_index.max()) < 1000


def test_construction_rules_on_synthetic_digits(tmp_path):
    """The synthetic twin: the official rules (grouped by digit, first images of each class squared,
    round() counts, grey in three channels) checked on digits that are always there."""
    from fixtures_datasets import make_mnist

    from masktune.datasets.mnist_idx import load_mnist

    images, digits = load_mnist(make_mnist(tmp_path, n_train=1000, n_test=10))["train"]
    samples = build_biased_split(images, digits, 0.1, 3, RED)
    n0, n1 = (digits < 5).sum(), (digits >= 5).sum()
    class0, class1 = samples.labels == 0, samples.labels == 1
    assert samples.attributes[class0].sum() == round(0.9 * n0) and samples.attributes[class1].sum() == round(0.1 * n1)
    assert samples.attributes[class0][:round(0.9 * n0)].all() and samples.attributes[class1][:round(0.1 * n1)].all()
    assert np.all(np.diff(digits[samples.source_index]) >= 0)
    square = samples.attributes == 1
    assert (samples.images[square, :3, :3] == RED).all()
    np.testing.assert_array_equal(samples.images[~square, ..., 1], images[samples.source_index[~square]])
