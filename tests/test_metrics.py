"""Group metrics and the Background Challenge's BG-Gap on hand-made prediction sets."""
from __future__ import annotations

import numpy as np
import pytest

from masktune.eval.metrics import background_challenge_metrics, group_metrics

NAMES = {0: "y0_no_square", 1: "y1_no_square", 2: "y0_square", 3: "y1_square"}


def test_accuracy_per_group_and_worst_group_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
    attributes = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    predictions = np.array([0, 0, 1, 1, 1, 1, 1, 0, 0, 1])
    metrics = group_metrics(labels, 2 * attributes + labels, predictions, NAMES)
    # groups: y0_no_square 2/4, y1_no_square 3/3, y0_square 1/1, y1_square 1/2; overall 7/10
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["groups"] == {"y0_no_square": 0.5, "y1_no_square": 1.0, "y0_square": 1.0, "y1_square": 0.5}
    assert metrics["worst_group_accuracy"] == 0.5


def test_groups_absent_from_a_split_are_left_out_not_zero():
    labels = np.array([0, 1, 1, 0])
    metrics = group_metrics(labels, labels, np.array([0, 1, 0, 0]), NAMES)  # no square anywhere
    assert metrics["groups"] == {"y0_no_square": 1.0, "y1_no_square": 0.5}
    assert metrics["worst_group_accuracy"] == 0.5
    assert metrics["unbiased_accuracy"] == 0.75  # the present groups only, not a 0 for the absent ones


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 predictions for 4 labels"):
        group_metrics(np.zeros(4, int), np.zeros(4, int), np.zeros(3, int), NAMES)


# Waterbirds-like training set: the majority group 0 dominates, the others are rare.
TRAIN_COUNTS = {0: 7, 1: 1, 2: 1, 3: 1}


def test_train_weighted_average_differs_from_pooled_and_plain_group_mean():
    groups = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    labels = groups % 2
    correct = np.array([1, 1, 1, 0, 1, 0, 1, 1, 1, 0], bool)
    predictions = np.where(correct, labels, 1 - labels)
    metrics = group_metrics(labels, groups, predictions, NAMES, train_group_counts=TRAIN_COUNTS)
    # groups: 3/4, 1/2, 2/2, 1/2; pooled 7/10; plain mean of groups (0.75+0.5+1+0.5)/4 = 0.6875;
    # train-weighted (7*0.75 + 1*0.5 + 1*1 + 1*0.5) / 10 = 7.25/10
    assert metrics["groups"] == {"y0_no_square": 0.75, "y1_no_square": 0.5, "y0_square": 1.0, "y1_square": 0.5}
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["worst_group_accuracy"] == 0.5
    assert metrics["average_accuracy_train_weighted"] == pytest.approx(0.725)
    assert metrics["unbiased_accuracy"] == pytest.approx(0.6875)  # BPA's and ClusterFix's "unbiased"


def test_train_weighted_average_renormalises_over_groups_present_in_the_split():
    labels = np.array([0, 0, 1, 1])
    metrics = group_metrics(labels, labels, np.array([0, 1, 1, 1]), NAMES, train_group_counts=TRAIN_COUNTS)
    # only groups 0 (1/2) and 1 (2/2) present: weights 7 and 1 renormalised over 8 -> (3.5 + 1) / 8
    assert metrics["average_accuracy_train_weighted"] == pytest.approx(0.5625)
    assert metrics["accuracy"] == pytest.approx(0.75)


def test_train_weighted_average_edge_cases():
    labels = np.array([0, 1])
    only_untrained_groups = group_metrics(labels, labels + 2, labels, NAMES, train_group_counts={0: 5, 1: 5})
    assert np.isnan(only_untrained_groups["average_accuracy_train_weighted"])  # no weight on present groups
    assert "average_accuracy_train_weighted" not in group_metrics(labels, labels, labels, NAMES)
    with pytest.raises(ValueError, match=r"group ids \[7\]"):
        group_metrics(labels, labels, labels, NAMES, train_group_counts={0: 1, 7: 1})


def test_bg_gap_is_mixed_same_minus_mixed_rand():
    # ResNet-50 row of the MadryLab/backgrounds_challenge README: 86.2% - 78.9% = 7.3%
    metrics = background_challenge_metrics({"original": 0.956, "mixed_same": 0.862, "mixed_rand": 0.789})
    assert metrics["bg_gap"] == pytest.approx(0.073)
    assert metrics["original"] == 0.956 and metrics["mixed_same"] == 0.862 and metrics["mixed_rand"] == 0.789


def test_bg_gap_needs_both_mixed_variants_and_known_names():
    assert background_challenge_metrics({"original": 0.9, "mixed_same": 0.8}) == {"original": 0.9, "mixed_same": 0.8}
    with pytest.raises(ValueError, match="mixed-same"):
        background_challenge_metrics({"mixed-same": 0.8})


def test_class_accuracies_worst_and_mean_class_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predictions = np.array([0, 0, 1, 1, 0, 2, 2, 2, 0])  # class 0: 2/3, class 1: 1/2, class 2: 3/4
    names = {0: "cat", 1: "dog", 2: "fox"}
    metrics = group_metrics(labels, labels, predictions, names, class_names=("cat", "dog", "fox"))
    assert metrics["classes"] == pytest.approx({"cat": 2 / 3, "dog": 1 / 2, "fox": 3 / 4})
    assert metrics["worst_class_accuracy"] == pytest.approx(1 / 2)
    assert metrics["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    assert metrics["accuracy"] == pytest.approx(6 / 9)
    assert "classes" not in group_metrics(labels, labels, predictions, names)  # only when asked


def test_headline_without_known_groups_names_class_measures():
    from masktune.eval.report import NO_GROUPS_NOTE, comparison_markdown, headline

    results = {"erm": {"test": {"accuracy": 0.9, "unbiased_accuracy": 0.8, "worst_group_accuracy": 0.7,
                                "mean_class_accuracy": 0.8, "worst_class_accuracy": 0.7}}}
    assert headline(results, ("test",), "accuracy", groups_known=False) == {
        "erm": {"test": {"average": 0.9, "worst_class": 0.7}}}
    assert headline(results, ("test",), "accuracy") == {"erm": {"test": {"average": 0.9, "worst_group": 0.7}}}
    table = comparison_markdown("folder", results, {"erm": {"title": "ERM", "group_labels": "✗/✗"}}, ("test",),
                                "accuracy", groups_known=False)
    assert NO_GROUPS_NOTE in table and "| test mean class | test worst class |" in table


def test_gallery_shows_each_groups_most_then_least_masked_images():
    from masktune.eval.figures import gallery_file_name, pick_gallery

    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0])
    groups = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2])  # class 0 has groups 0 and 2, class 1 group 1
    fraction = np.array([0.1, 0.5, 0.0, 0.3, 0.5, 0.2, 0.9, 0.4, 0.7])
    gallery = pick_gallery(labels, groups, fraction, per_group=3)
    # group 0: most masked 1, 4 (tie: dataset order), then least masked 2; group 2: its only image 8
    assert gallery[0].tolist() == [1, 4, 2, 8]
    assert gallery[1].tolist() == [6, 7, 5]
    assert pick_gallery(labels, groups, fraction, per_group=2)[0].tolist() == [1, 2, 8]
    assert gallery_file_name(3, "wheeled vehicle/car") == "03_wheeled_vehicle_car.png"
