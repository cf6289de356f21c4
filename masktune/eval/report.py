"""The comparison of methods: the headline `dvc exp show` and `dvc metrics diff` open on, the
Markdown table, and the CSV behind the `dvc plots` bar chart.

The headline holds, per method and test split, three numbers: "average" (the accuracy the dataset's
literature calls average, `DatasetSpec.average`), "unbiased" (the unweighted mean of the group
accuracies, BPA's and ClusterFix's) and "worst_group". Everything else (pooled accuracy where the
average is train-weighted, validation, each group, BG-Gap) is in the details file, so the metric
columns stay few.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from masktune.io.files import atomic_output

AVERAGE_MEANING = {
    "accuracy": "plain accuracy, all predictions of the split pooled (what MaskTune's papers report)",
    "average_accuracy_train_weighted": "group accuracies weighted by the training group proportions "
                                       "(the \"average\" of DFR, JTT and later Waterbirds papers)",
}


def headline(results: Mapping[str, Mapping], test_splits: Sequence[str], average: str) -> dict:
    """{method: {test split: {"average": ..., "unbiased": ..., "worst_group": ...}}} from the detailed results."""
    return {name: {split: {"average": splits[split][average], "unbiased": splits[split]["unbiased_accuracy"],
                           "worst_group": splits[split]["worst_group_accuracy"]}
                   for split in test_splits}
            for name, splits in results.items()}


def comparison_markdown(dataset: str, results: Mapping[str, Mapping], methods: Mapping[str, Mapping],
                        splits: Sequence[str], average: str) -> str:
    """Method x split table of average, unbiased and worst-group accuracy, each row with its group-label use.

    `methods`: {name: {"title": ..., "group_labels": "✗/✗"}} in report order."""
    header = ["method", "group labels (train/select)"]
    for split in splits:
        header += [f"{split} average", f"{split} unbiased", f"{split} worst group"]
    lines = [f"# Methods compared on {dataset}", "",
             (f"Average: {AVERAGE_MEANING.get(average, average)}. Unbiased: the unweighted mean of the group "
              "accuracies (BPA's and ClusterFix's). Worst group: the lowest accuracy over the groups (label x "
              "spurious attribute) present in the split."),
             "Group labels: whether the method used them for training / for model selection (✗ no, ✓ yes).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, info in methods.items():
        cells = [info["title"], info["group_labels"]]
        for split in splits:
            metrics = results[name][split]
            cells += [f"{metrics[average]:.2%}", f"{metrics['unbiased_accuracy']:.2%}",
                      f"{metrics['worst_group_accuracy']:.2%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_methods_csv(path: str | Path, headline_metrics: Mapping[str, Mapping], labels: Mapping[str, str]) -> None:
    """`bar, accuracy` rows, one per method, test split and measure: the bar chart of `dvc plots show`.
    `labels`: {method: its name with its group-label use}."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split_measure_method", "accuracy"])
        for split in next(iter(headline_metrics.values()), {}):
            for measure in ("average", "unbiased", "worst_group"):
                for name, splits in headline_metrics.items():
                    writer.writerow([f"{split} | {measure.replace('_', ' ')} | {labels[name]}",
                                     f"{splits[split][measure]:.6f}"])
