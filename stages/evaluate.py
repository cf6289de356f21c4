"""Stage `evaluate`: ERM and the fine-tuned model on every test split and on validation.

Writes accuracy, per-group accuracy and worst-group accuracy to one JSON file, a CSV of the group
accuracies for `dvc plots`, and an image grid (original / saliency / masked, a few training images
of each group). The ERM model evaluated is the best-validation checkpoint, as the official `test()`.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from masktune.datasets import get_dataset
from masktune.errors import run_stage
from masktune.figures import pick_per_group, save_mask_grid
from masktune.mask_store import apply_packed_masks, read_packed_masks
from masktune.metrics import group_metrics
from masktune.params import load_stage_params
from masktune.saliency_store import full_maps_at
from masktune.storage import atomic_directory, read_attrs, read_rows, read_split, write_json
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
    batch_size = params.integer("evaluate.batch_size", 1)
    per_group = params.integer("evaluate.examples_per_group", 1, 16)

    attrs = read_attrs(args.data)
    spec = get_dataset(str(attrs["dataset"]))
    method = str(read_attrs(args.masks)["method"])
    device = select_device()
    models = {"erm": load_checkpoint(args.erm, device)[0],
              METHOD_NAMES[method]: load_checkpoint(args.finetuned, device)[0]}
    results: dict = {name: {} for name in models}
    for split in spec.test_splits + ("val",):
        samples = read_split(args.data, split)
        for name, model in models.items():
            predictions = predict(model, samples, batch_size, device, f"{name} on {split}")
            results[name][split] = group_metrics(samples.labels, samples.groups, predictions,
                                                 spec.group_names)
    write_json(args.metrics, results)

    (groups,) = read_vectors(args.data, "train", "groups")
    picked = pick_per_group(groups, per_group)  # only these rows are read from the large files
    images = read_rows(args.data, "train/images", picked)
    saliency = full_maps_at(args.saliency, len(groups), picked)
    masked = apply_packed_masks(images, read_packed_masks(args.masks, len(groups), images.shape[1:3], picked))
    with atomic_directory(args.plots) as tmp_dir:
        _write_group_csv(Path(tmp_dir) / "group_accuracy.csv", results)
        save_mask_grid(Path(tmp_dir) / "mask_examples.png", images, saliency, masked,
                       [spec.group_names[int(g)] for g in groups[picked]],
                       f"{METHOD_NAMES[method]} masks ({method}) on training images")
    for name, splits in results.items():
        print(name + ": " + ", ".join(f"{split} {m['accuracy']:.2%} (worst group "
                                      f"{m['worst_group_accuracy']:.2%})" for split, m in splits.items()))


def _write_group_csv(path: Path, results: dict) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model_split_group", "accuracy"])
        for name, splits in results.items():
            for split, metrics in splits.items():
                for group, accuracy in metrics["groups"].items():
                    writer.writerow([f"{name} | {split} | {group}", f"{accuracy:.6f}"])


if __name__ == "__main__":
    main()
