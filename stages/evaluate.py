"""Stage `evaluate`: every method listed in the `methods` param, on every test split and on validation.

Per model (one per method, two for ExMap: G-ExMap and L-ExMap) and split: the plain accuracy (all predictions
pooled: what the official MaskTune code reports), every class's and every group's accuracy (label x spurious
attribute; the classes where none is known: a folder without one), the worst-group accuracy and the
average weighted by the training group proportions (what DFR and later papers report as "average"
on Waterbirds); for IN-9L also the Background Challenge accuracies by variant and the BG-Gap. Each
method's model is the checkpoint its stages keep (ERM: the best-validation checkpoint, as the
official `test()`); its title and group-label use are what the checkpoint records.

Writes the headline (`--metrics`: average and worst-group accuracy per method and test split, the
DVC metrics), the comparison table (`--comparison`), and in `--details` the full results and the
CSVs behind the `dvc plots` bar charts (per method; per group).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from masktune.config.stages import load_stage_config
from masktune.data.prepared import open_prepared
from masktune.data.splits import open_split
from masktune.distributed import select_device
from masktune.errors import UserError, run_stage
from masktune.eval.figures import write_group_csv
from masktune.eval.metrics import background_challenge_metrics, group_metrics
from masktune.eval.report import (
    NO_GROUPS_NOTE,
    comparison_markdown,
    headline,
    method_title,
    write_comparison,
    write_methods_csv,
)
from masktune.eval.selection import GroupLabels
from masktune.io.files import atomic_directory, write_json
from masktune.methods import reported_models
from masktune.models.checkpoint import load_checkpoint
from masktune.train.loop import predict


def _group_labels(state: dict) -> GroupLabels:
    """The checkpoint's record (every method's stage writes it); ERM's checkpoints have none: ✗/✗."""
    return GroupLabels(**state.get("group_labels", {"training": False, "model_selection": False}))


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--models", required=True, help="folder of the checkpoints of every method")
    parser.add_argument("--metrics", required=True, help="JSON: the headline, per method and test split")
    parser.add_argument("--comparison", required=True, help="Markdown: method x split table")
    parser.add_argument("--details", required=True, help="folder: details.json, methods.csv, group_accuracy.csv")
    args = parser.parse_args()

    config = load_stage_config("evaluate")
    prepared, spec = open_prepared(args.data)
    entries = reported_models(config.methods, args.models)
    if not entries:
        raise UserError("params.yaml: `methods` lists no method to evaluate")
    device = select_device()
    models, info = {}, {}
    for name, path in entries.items():
        models[name], state = load_checkpoint(path, device)
        info[name] = {"title": method_title(name, state), "checkpoint": str(path),
                      "group_labels": str(_group_labels(state))}
    (train_groups,) = prepared.vectors("train", "groups")
    train_counts = {int(g): int(n) for g, n in zip(*np.unique(train_groups, return_counts=True))}
    results: dict = {name: {} for name in models}
    splits = spec.test_splits + ("val",)
    for split in splits:
        data = open_split(prepared, split, spec.views, "eval", config.workers)
        for name, model in models.items():
            predictions = predict(model, data, config.eval_batch_size, device, f"{name} on {split}")
            results[name][split] = group_metrics(data.labels, data.groups, predictions, prepared.group_names,
                                                 train_counts, prepared.class_names)
    if spec.metrics == "background_challenge":
        for name in models:
            results[name]["background_challenge"] = background_challenge_metrics(
                {split.removeprefix("test_"): results[name][split]["accuracy"] for split in spec.test_splits})

    top = headline(results, spec.test_splits, spec.average, spec.groups_known)
    write_json(args.metrics, top)
    write_comparison(args.comparison, comparison_markdown(prepared.dataset, results, info, splits, spec.average,
                                                          spec.groups_known))
    with atomic_directory(args.details) as tmp_dir:
        write_json(Path(tmp_dir) / "details.json",
                   {"dataset": prepared.dataset, "average": spec.average,
                    "methods": {name: {**info[name], "results": results[name]} for name in models}})
        write_methods_csv(Path(tmp_dir) / "methods.csv", top,
                          {name: f"{name} {info[name]['group_labels']}" for name in models})
        write_group_csv(Path(tmp_dir) / "group_accuracy.csv", results)
    worst = "worst_group" if spec.groups_known else "worst_class"
    for name, per_split in top.items():
        print(f"{name} ({info[name]['group_labels']}): " + ", ".join(
            f"{split} {m['average']:.2%} ({worst.replace('_', ' ')} {m[worst]:.2%})" for split, m in per_split.items()))
    if not spec.groups_known:
        print(NO_GROUPS_NOTE)


if __name__ == "__main__":
    main()
