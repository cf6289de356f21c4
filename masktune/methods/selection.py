"""Model selection on validation, shared by the methods that train a model for several epochs (JTT,
ClusterFix): by plain accuracy (no group labels, ✗, the default), or by a score that reads the
validation group labels (✓): the worst-group accuracy (how JTT is tuned), or the unbiased accuracy,
the unweighted mean of the group accuracies (ClusterFix's `best_avg_acc`, BPA's)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from masktune.data.splits import Split
from masktune.eval.metrics import unbiased_accuracy, worst_group_accuracy
from masktune.methods.base import GroupLabels, Method
from masktune.train.loop import validation_accuracy

# selection param value -> the score `fit` selects by
SELECT_BY = {"average": "accuracy", "worst_group": "worst_group_accuracy", "unbiased": "unbiased_accuracy"}
SELECTIONS_USING_GROUPS = ("worst_group", "unbiased")


def selection_score(val: Split, selection: str) -> Callable[[np.ndarray], dict[str, float]]:
    """The validation scores logged each epoch, with the one `selection` names among them: plain
    accuracy always, plus the group score the selection reads (which uses the validation groups)."""
    average = validation_accuracy(val)

    def score(predictions: np.ndarray) -> dict[str, float]:
        scores = average(predictions)
        if selection == "worst_group":
            scores["worst_group_accuracy"] = worst_group_accuracy(val.labels, val.groups, predictions)
        elif selection == "unbiased":
            scores["unbiased_accuracy"] = unbiased_accuracy(val.labels, val.groups, predictions)
        return scores
    return score


class SelectedOnValidation(Method):
    """A method that trains for several epochs and keeps one by a `selection` param (JTT, ClusterFix):
    no group labels for training; for model selection only when the selection reads them."""

    @staticmethod
    def group_labels_for(selection: str) -> GroupLabels:
        return GroupLabels(training=False, model_selection=selection in SELECTIONS_USING_GROUPS)
