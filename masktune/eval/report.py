"""The comparison of methods: the headline `dvc exp show` and `dvc metrics diff` open on, the
Markdown table, and the CSV behind the `dvc plots` bar chart.

The headline (the DVC metrics `dvc exp show` and `dvc metrics diff` list) holds, per method and test split,
two numbers: "average" (the accuracy the dataset's literature calls average, `DatasetSpec.average`) and
"worst_group"; on a dataset whose spurious attribute is not known (a folder of images without a
`spurious` or `group` column) the groups are the classes, and the second is "worst_class". The table
adds the unbiased (the unweighted mean of the group accuracies, BPA's and ClusterFix's; "mean_class");
everything else (pooled accuracy where the average is train-weighted, validation, each group and class,
BG-Gap, the selection gap) is in the details file, so the metric columns stay few.
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


GROUP_MEASURES = {"unbiased": "unbiased_accuracy", "worst_group": "worst_group_accuracy"}
CLASS_MEASURES = {"mean_class": "mean_class_accuracy", "worst_class": "worst_class_accuracy"}
NO_GROUPS_NOTE = ("No spurious attribute is known for this dataset, so its groups are its classes: the table "
                  "reports the mean and worst class accuracy. Group accuracies need a `spurious` or `group` "
                  "column in the CSV index (README, \"Your own data\").")


def method_title(name: str, checkpoint: Mapping) -> str:
    """The report's name of model `name`: the title the stage that trained it recorded in its checkpoint (from its
    method's spec, masktune/methods), its name where it records none."""
    return str(checkpoint.get("title") or ("ERM" if name == "erm" else name))


def measures(average: str, groups_known: bool = True) -> dict[str, str]:
    """Headline name -> key of the detailed results: the average, then the group (or class) measures."""
    return {"average": average, **(GROUP_MEASURES if groups_known else CLASS_MEASURES)}


HEADLINE_MEASURES = ("average", "worst_group", "worst_class")


def headline(results: Mapping[str, Mapping], test_splits: Sequence[str], average: str,
             groups_known: bool = True) -> dict:
    """{method: {test split: {"average": ..., "worst_group": ...}}} from the detailed results (without
    known groups: "average", "worst_class")."""
    keys = {k: v for k, v in measures(average, groups_known).items() if k in HEADLINE_MEASURES}
    return {name: {split: {measure: splits[split][key] for measure, key in keys.items()} for split in test_splits}
            for name, splits in results.items()}


def comparison_markdown(dataset: str, results: Mapping[str, Mapping], methods: Mapping[str, Mapping],
                        splits: Sequence[str], average: str, groups_known: bool = True) -> str:
    """Method x split table of average, unbiased and worst-group accuracy (without known groups: mean and
    worst class accuracy), each row with its group-label use.

    `methods`: {name: {"title": ..., "group_labels": "✗/✗"}} in report order."""
    keys = measures(average, groups_known)
    header = ["method", "group labels (train/select)"]
    for split in splits:
        header += [f"{split} {measure.replace('_', ' ')}" for measure in keys]
    if groups_known:
        meaning = ("Unbiased: the unweighted mean of the group accuracies (BPA's and ClusterFix's). Worst group: "
                   "the lowest accuracy over the groups (label x spurious attribute) present in the split.")
    else:
        meaning = NO_GROUPS_NOTE
    lines = [f"# Methods compared on {dataset}", "",
             f"Average: {AVERAGE_MEANING.get(average, average)}. {meaning}",
             "Group labels: whether the method used them for training / for model selection (✗ no, ✓ yes).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, info in methods.items():
        cells = [info["title"], info["group_labels"]]
        for split in splits:
            cells += [f"{results[name][split][key]:.2%}" for key in keys.values()]
        lines.append("| " + " | ".join(cells) + " |")
    warned = [(info["title"], warning) for info in methods.values() for warning in info.get("warnings", [])]
    if warned:  # training that could not work as configured (masktune/train/health.py)
        lines += ["", "Warnings (the training of these models, as their checkpoints record it):"]
        lines += [f"- {title}: {warning}" for title, warning in warned]
    return "\n".join(lines) + "\n"


def selection_gap_markdown(gaps: Mapping[str, Mapping], results: Mapping[str, Mapping], methods: Mapping[str, Mapping],
                           test_splits: Sequence[str], groups_known: bool = True) -> str:
    """The selection gap: per selecting model and test split, the worst group (class) under its own
    selection rule, under the true groups' worst group on validation (most papers' rule, ✓), and the
    difference. `gaps`: compare.oracle_results; `methods`: {name: {"title": ...}}."""
    worst = "worst_group_accuracy" if groups_known else "worst_class_accuracy"
    label = "worst group" if groups_known else "worst class"
    header = ["method", "its selection"]
    for split in test_splits:
        header += [f"{split} {label}", f"{split} {label}, selected by the true worst group ✓", f"{split} gap"]
    lines = ["", "## The selection gap", "",
             (f"What each model's selection rule costs against selecting by the true groups' {label} on validation "
              "(the rule of most papers' tables, which reads group labels: reported here, never used). Gap: its "
              "figure minus the oracle's; 0 where both rules pick the same model."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, gap in gaps.items():
        cells = [methods[name]["title"], gap["selection"]]
        for split in test_splits:
            own, oracle = results[name][split][worst], gap["results"][split][worst]
            cells += [f"{own:.2%}", f"{oracle:.2%}", f"{100 * (own - oracle):+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline_lines(top: Mapping[str, Mapping], methods: Mapping[str, Mapping], groups_known: bool = True) -> list[str]:
    """One line per model for the console: its group-label use, and per test split its average and
    worst group (class)."""
    worst = "worst_group" if groups_known else "worst_class"
    return [f"{name} ({methods[name]['group_labels']}): " + ", ".join(
        f"{split} {m['average']:.2%} ({worst.replace('_', ' ')} {m[worst]:.2%})" for split, m in per_split.items())
        for name, per_split in top.items()] + ([] if groups_known else [NO_GROUPS_NOTE])


def write_comparison(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_methods_csv(path: str | Path, headline_metrics: Mapping[str, Mapping], labels: Mapping[str, str]) -> None:
    """`bar, accuracy` rows, one per method, test split and measure: the bar chart of `dvc plots show`.
    `labels`: {method: its name with its group-label use}."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split_measure_method", "accuracy"])
        first = next(iter(headline_metrics.values()), {})
        for split in first:
            for measure in first[split]:
                for name, splits in headline_metrics.items():
                    writer.writerow([f"{split} | {measure.replace('_', ' ')} | {labels[name]}",
                                     f"{splits[split][measure]:.6f}"])


def write_charts(folder: str | Path, headline_metrics: Mapping[str, Mapping], uses: Mapping[str, str],
                 results: Mapping[str, Mapping]) -> None:
    """The `dvc plots` data in `folder`: methods.csv (a bar per method, split and measure, labelled with the
    method's group-label use, `uses`: {name: "✗/✗"}), its image twin methods.png (drawn without Vega: offline,
    coloured by that use), and group_accuracy.csv (a bar per method, split and group)."""
    from masktune.eval.figures import save_method_panels, write_group_csv

    folder = Path(folder)
    write_methods_csv(folder / "methods.csv", headline_metrics, {name: f"{name} {uses[name]}" for name in headline_metrics})
    first = next(iter(headline_metrics.values()), {})
    panels = {f"{split}: {measure.replace('_', ' ')}": {name: (splits[split][measure], None)
                                                         for name, splits in headline_metrics.items()}
              for split in first for measure in first[split]}
    save_method_panels(folder / "methods.png", panels, {name: uses[name] for name in headline_metrics},
                       "methods compared (metrics/evaluate.json)")
    write_group_csv(folder / "group_accuracy.csv", results)
