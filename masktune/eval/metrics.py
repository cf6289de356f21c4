"""Accuracy, per-group accuracy, worst-group and unbiased (mean group) accuracy (groups = label x spurious attribute),
per-class, worst-class and mean class accuracy, the
train-weighted average accuracy reported on Waterbirds, and the ImageNet-9 Background Challenge's BG-Gap."""
from __future__ import annotations

import numpy as np


def group_metrics(labels: np.ndarray, groups: np.ndarray, predictions: np.ndarray,
                  group_names: dict[int, str], train_group_counts: dict[int, int] | None = None,
                  class_names: tuple[str, ...] | None = None) -> dict:
    """Accuracies of `predictions` on one split, under these keys:

    - "accuracy": plain accuracy, all predictions of the split pooled (what the official MaskTune code
      reports as test accuracy).
    - "groups": {group name: accuracy of that group}, for the groups of `group_names` present in the split.
    - "worst_group_accuracy": the lowest of those.
    - "unbiased_accuracy": their unweighted mean, every present group counting the same (the "unbiased"
      accuracy of BPA, Seo et al. 2022, and ClusterFix: `np.nanmean` of the group accuracies in
      ICCV11624 trainers/cfix.py L409).
    - "average_accuracy_train_weighted" (only when `train_group_counts` is given): the group accuracies
      averaged with weights = the training set's group proportions, `sum_g n_train[g] * acc[g] / sum_g
      n_train[g]`. This is the "average" (or "mean") accuracy DFR (Kirichenko et al. 2022) and most later
      papers report on Waterbirds, whose test set is close to group-balanced unlike its training set: DFR's
      authors confirm it in PolinaKirichenko/deep_feature_reweighting#1. It differs from "accuracy"
      whenever the split's group proportions differ from training's.

    With `class_names` (class id -> name), also:
    - "classes": {class name: accuracy of that class}, for the classes present in the split;
    - "worst_class_accuracy" and "mean_class_accuracy" (balanced accuracy): their lowest and their mean.
    These are what a dataset without a known spurious attribute can report (its groups are its classes).

    `train_group_counts` maps a group id (the values in `groups`) to its number of training examples;
    ids missing from it count 0. Groups absent from a split (e.g. "y0_square" in test_original, which
    has no square) are left out rather than reported as 0, so the worst group is the worst group that
    exists, and the train-weighted average is taken over the present groups with their weights
    renormalised to sum to 1 (it is NaN if none of them has training examples).
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    correct = labels == predictions
    present = {g: float(correct[groups == g].mean()) for g in sorted(group_names) if (groups == g).any()}
    per_group = {group_names[g]: accuracy for g, accuracy in present.items()}
    metrics = {
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "worst_group_accuracy": min(per_group.values()) if per_group else float("nan"),
        "unbiased_accuracy": float(np.mean(list(per_group.values()))) if per_group else float("nan"),
        "groups": per_group,
    }
    if class_names is not None:
        per_class = {class_names[c]: float(correct[labels == c].mean())
                     for c in range(len(class_names)) if (labels == c).any()}
        metrics["classes"] = per_class
        metrics["worst_class_accuracy"] = min(per_class.values()) if per_class else float("nan")
        metrics["mean_class_accuracy"] = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    if train_group_counts is not None:
        metrics["average_accuracy_train_weighted"] = _train_weighted_average(present, train_group_counts,
                                                                             group_names)
    return metrics


def _train_weighted_average(accuracies: dict[int, float], train_group_counts: dict[int, int],
                            group_names: dict[int, str]) -> float:
    unknown = sorted(set(train_group_counts) - set(group_names))
    if unknown:
        raise ValueError(f"train_group_counts has group ids {unknown} that are not in group_names")
    negative = {g: n for g, n in train_group_counts.items() if n < 0}
    if negative:
        raise ValueError(f"train_group_counts must be counts >= 0, got {negative}")
    weights = {g: train_group_counts.get(g, 0) for g in accuracies}
    total = sum(weights.values())
    if total == 0:
        return float("nan")
    return float(sum(weights[g] * accuracy for g, accuracy in accuracies.items()) / total)


# The variants of ImageNet-9 (IN-9) in the Background Challenge's test release.
BACKGROUND_CHALLENGE_VARIANTS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg",
                                 "only_bg_b", "only_bg_t")


def background_challenge_metrics(accuracies: dict[str, float]) -> dict:
    """Per-variant accuracies on the ImageNet-9 Background Challenge (Xiao et al., "Noise or Signal: The
    Role of Image Backgrounds in Object Recognition", ICLR 2021, arXiv:2006.09994), with the BG-Gap.

    `accuracies` maps variant names (those of BACKGROUND_CHALLENGE_VARIANTS that were evaluated) to
    accuracies; they are returned unchanged, plus "bg_gap" = accuracies["mixed_same"] -
    accuracies["mixed_rand"] when both are present, in the same unit (fraction or percent). BG-Gap =
    Mixed-Same accuracy minus Mixed-Rand accuracy: how much background correlations sway the model when
    the correct foreground is present (definition under the table "Test Accuracy Results on ImageNet-9"
    of the MadryLab/backgrounds_challenge README, e.g. ResNet-50: 86.2% - 78.9% = 7.3%).
    Mixed-Same puts each foreground on a background from the same class, Mixed-Rand on one from a random
    class.
    """
    unknown = sorted(set(accuracies) - set(BACKGROUND_CHALLENGE_VARIANTS))
    if unknown:
        raise ValueError(f"unknown Background Challenge variants {unknown}: expected some of "
                         f"{', '.join(BACKGROUND_CHALLENGE_VARIANTS)}")
    metrics = {variant: float(accuracy) for variant, accuracy in accuracies.items()}
    if "mixed_same" in metrics and "mixed_rand" in metrics:
        metrics["bg_gap"] = metrics["mixed_same"] - metrics["mixed_rand"]
    return metrics
