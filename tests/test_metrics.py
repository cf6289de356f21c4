"""Group metrics on a hand-made prediction set."""
from __future__ import annotations

import numpy as np
import pytest

from masktune.metrics import group_metrics

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


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 predictions for 4 labels"):
        group_metrics(np.zeros(4, int), np.zeros(4, int), np.zeros(3, int), NAMES)
