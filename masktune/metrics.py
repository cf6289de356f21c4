"""Accuracy, per-group accuracy and worst-group accuracy (groups = label x spurious attribute)."""
from __future__ import annotations

import numpy as np


def group_metrics(labels: np.ndarray, groups: np.ndarray, predictions: np.ndarray,
                  group_names: dict[int, str]) -> dict:
    """Plain accuracy, each non-empty group's accuracy, and the worst of those.

    Groups absent from a split (e.g. "y0_square" in test_original, which has no square) are left
    out rather than reported as 0, so the worst group is the worst group that exists.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    correct = labels == predictions
    per_group = {name: float(correct[groups == g].mean())
                 for g, name in sorted(group_names.items()) if (groups == g).any()}
    return {
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "worst_group_accuracy": min(per_group.values()) if per_group else float("nan"),
        "groups": per_group,
    }
