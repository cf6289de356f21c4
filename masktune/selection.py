"""Model selection on validation, and the group-label use a result carries (the ✗/✓ of the report).

A trainer that runs several epochs keeps the epoch of the best validation score under one rule (the
`selection` of its method in params.yaml). The rules, and whether they read group labels:
- `average`: plain validation accuracy (✗; what the official MaskTune code selects by);
- `worst_class`: the lowest class accuracy (✗: class labels only);
- `worst_pseudo_group`: the lowest accuracy over the method's own groups on validation, those of its
  groups file (✗, unless the groups file holds the true groups);
- `worst_group`: the lowest accuracy over the true groups (✓: how JTT and GroupDRO are tuned in their
  papers);
- `unbiased`: the unweighted mean of the true group accuracies (✓: ClusterFix's `best_avg_acc`, BPA's);
- `last`: the last epoch, no selection (✗: LfF's official run keeps it, alinlab/LfF train.py L305-317).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# selection param value -> the validation score `fit` selects by
SELECT_BY = {"average": "accuracy", "worst_class": "worst_class_accuracy",
             "worst_pseudo_group": "worst_pseudo_group_accuracy", "worst_group": "worst_group_accuracy",
             "unbiased": "unbiased_accuracy", "last": "last"}  # "last": masktune.train.fit.LAST
SELECTIONS = tuple(SELECT_BY)  # a robust pair's `selection`
READS_TRUE_GROUPS = ("worst_group", "unbiased")
# The reference every selection is compared with (its "selection gap"): the best worst-group validation
# accuracy over the true groups, most papers' rule (✓). Kept beside the chosen model, reported only.
ORACLE = "worst_group"


def worst_group_accuracy(labels: np.ndarray, groups: np.ndarray, predictions: np.ndarray) -> float:
    """The lowest accuracy over the groups present in the split (NaN for an empty split)."""
    correct = np.asarray(labels) == np.asarray(predictions)
    accuracies = [correct[groups == g].mean() for g in np.unique(groups)]
    return float(min(accuracies)) if accuracies else float("nan")


def unbiased_accuracy(labels: np.ndarray, groups: np.ndarray, predictions: np.ndarray) -> float:
    """The unweighted mean of the accuracies of the groups present in the split (NaN for an empty split)."""
    correct = np.asarray(labels) == np.asarray(predictions)
    accuracies = [correct[groups == g].mean() for g in np.unique(groups)]
    return float(np.mean(accuracies)) if accuracies else float("nan")


@dataclass(frozen=True)
class GroupLabels:
    """Whether a method uses the group labels (label x spurious attribute) of the training set to
    train, and of the validation set to select its model: the ✗/✓ columns of the literature."""
    training: bool
    model_selection: bool

    @staticmethod
    def mark(used: bool) -> str:
        return "✓" if used else "✗"

    def __str__(self) -> str:
        return f"{self.mark(self.training)}/{self.mark(self.model_selection)}"

    def as_dict(self) -> dict[str, bool]:
        return {"training": self.training, "model_selection": self.model_selection}


def group_labels_used(groups_use_labels: bool, selection: str, trains_on_groups: bool = True) -> GroupLabels:
    """The ✗/✓ of a model trained with a groups file (`groups_use_labels`: the true groups) and selected by
    `selection`; `trains_on_groups` False where the groups only select (never the case here yet)."""
    selects_with_labels = selection in READS_TRUE_GROUPS or (selection == "worst_pseudo_group" and groups_use_labels)
    return GroupLabels(training=trains_on_groups and groups_use_labels, model_selection=selects_with_labels)


def selection_score(labels: np.ndarray, selection: str, *, true_groups: np.ndarray | None = None,
                    pseudo_groups: np.ndarray | None = None,
                    oracle: bool = False) -> Callable[[np.ndarray], dict[str, float]]:
    """The validation scores logged each epoch: plain accuracy always, plus the score `selection` reads
    (from the true groups, the method's own groups or the classes), named as in SELECT_BY; with
    `oracle`, the ORACLE's score too (the true groups' worst group, for the selection gap: reported only)."""
    if selection not in SELECT_BY:
        raise ValueError(f"unknown selection {selection!r} (known: {', '.join(SELECT_BY)})")
    rules = {"worst_group": lambda p: worst_group_accuracy(labels, true_groups, p),
             "unbiased": lambda p: unbiased_accuracy(labels, true_groups, p),
             "worst_pseudo_group": lambda p: worst_group_accuracy(labels, pseudo_groups, p),
             "worst_class": lambda p: worst_group_accuracy(labels, labels, p)}
    scored = {name: rules[name] for name in dict.fromkeys([selection, *([ORACLE] if oracle else [])]) if name in rules}

    def score(predictions: np.ndarray) -> dict[str, float]:
        scores = {"accuracy": float((predictions == labels).mean())}
        scores |= {SELECT_BY[name]: rule(predictions) for name, rule in scored.items()}
        return scores
    return score
