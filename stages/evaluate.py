"""Stage `evaluate`: ERM and the fine-tuned model on every test split and on validation.

Writes, per model and split: the plain accuracy (all predictions pooled: what the official code
reports), every group's accuracy (label x spurious attribute), the worst-group accuracy and the
average weighted by the training group proportions (what DFR and later papers report as "average"
on Waterbirds); for IN-9L also the Background Challenge accuracies by variant and the BG-Gap. Plus a
CSV of the group accuracies for `dvc plots` and an image grid (masking view / saliency / masked, a
few training images of each group). The ERM model evaluated is the best-validation checkpoint, as
the official `test()`.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from masktune.datasets import get_dataset
from masktune.errors import run_stage
from masktune.figures import pick_per_group, save_mask_grid
from masktune.loaders import load_split, masking_view_images
from masktune.mask_store import apply_packed_masks, read_packed_masks
from masktune.metrics import background_challenge_metrics, group_metrics
from masktune.params import load_stage_params
from masktune.saliency_store import full_maps_at
from masktune.storage import atomic_directory, read_attrs, read_group_names, write_json
from masktune.streaming import read_vectors
from masktune.training import load_checkpoint, predict, select_device

METHOD_NAMES = {"xgradcam": "masktune", "random": "randmask"}


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--erm", required=True, help="best ERM checkpoint")
    parser.add_argument("--finetuned", required=True, help="fine-tuned checkpoint")
    parser.add_argument("--saliency", required=True, help="saliency maps of the train split (HDF5)")
    parser.add_argument("--masks", required=True, help="masks of the train split (HDF5)")
    parser.add_argument("--metrics", required=True, help="JSON file of all accuracies")
    parser.add_argument("--plots", required=True, help="folder: group_accuracy.csv, mask_examples.png")
    args = parser.parse_args()

    params = load_stage_params("evaluate")
    batch_size = params.integer(params.recipe_key("evaluate.batch_size", "eval_batch_size"), 1)
    workers = params.integer("evaluate.workers", 0, 64)
    per_group = params.integer("evaluate.examples_per_group", 1, 16)

    spec = get_dataset(str(read_attrs(args.data)["dataset"]))
    group_names = read_group_names(args.data)
    method = str(read_attrs(args.masks)["method"])
    device = select_device()
    models = {"erm": load_checkpoint(args.erm, device)[0],
              METHOD_NAMES[method]: load_checkpoint(args.finetuned, device)[0]}
    (groups,) = read_vectors(args.data, "train", "groups")
    train_counts = {int(g): int(n) for g, n in zip(*np.unique(groups, return_counts=True))}
    results: dict = {name: {} for name in models}
    for split in spec.test_splits + ("val",):
        data = load_split(args.data, split, "eval", workers)
        for name, model in models.items():
            predictions = predict(model, data, batch_size, device, f"{name} on {split}")
            results[name][split] = group_metrics(data.labels, data.groups, predictions, group_names, train_counts)
    if spec.metrics == "background_challenge":
        for name in models:
            results[name]["background_challenge"] = background_challenge_metrics(
                {split.removeprefix("test_"): results[name][split]["accuracy"] for split in spec.test_splits})
    write_json(args.metrics, results)

    picked = pick_per_group(groups, per_group)  # only these rows are read from the large files
    images = masking_view_images(args.data, picked)
    saliency = full_maps_at(args.saliency, len(groups), picked)
    masked = apply_packed_masks(images, read_packed_masks(args.masks, len(groups), images.shape[1:3], picked))
    with atomic_directory(args.plots) as tmp_dir:
        _write_group_csv(Path(tmp_dir) / "group_accuracy.csv", results)
        save_mask_grid(Path(tmp_dir) / "mask_examples.png", images, saliency, masked,
                       [group_names[int(g)] for g in groups[picked]],
                       f"{METHOD_NAMES[method]} masks ({method}) on training images (as the saliency saw them)")
    for name, splits in results.items():
        print(name + ": " + ", ".join(f"{split} {m['accuracy']:.2%} (worst group {m['worst_group_accuracy']:.2%})"
                                      for split, m in splits.items() if "worst_group_accuracy" in m))
        if "background_challenge" in splits:
            print(f"{name}: BG-gap {splits['background_challenge'].get('bg_gap', float('nan')):.2%}")


def _write_group_csv(path: Path, results: dict) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model_split_group", "accuracy"])
        for name, splits in results.items():
            for split, metrics in splits.items():
                for group, accuracy in metrics.get("groups", {}).items():
                    writer.writerow([f"{name} | {split} | {group}", f"{accuracy:.6f}"])


if __name__ == "__main__":
    main()
