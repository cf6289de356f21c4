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
from pathlib import Path

import numpy as np

from masktune.config.stages import load_stage_config
from masktune.data.masks import apply_masks, masks_method, read_masks
from masktune.data.splits import masking_view_images, open_split
from masktune.datasets import open_prepared
from masktune.errors import run_stage
from masktune.eval.figures import pick_per_group, save_mask_grid, write_group_csv
from masktune.eval.metrics import background_challenge_metrics, group_metrics
from masktune.io.files import atomic_directory, write_json
from masktune.models.checkpoint import load_checkpoint
from masktune.saliency.file import full_maps_at
from masktune.train.loop import predict, select_device

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

    config = load_stage_config("evaluate")
    prepared, spec = open_prepared(args.data)
    group_names = prepared.group_names
    method = masks_method(args.masks)
    device = select_device()
    models = {"erm": load_checkpoint(args.erm, device)[0],
              METHOD_NAMES[method]: load_checkpoint(args.finetuned, device)[0]}
    (groups,) = prepared.vectors("train", "groups")
    train_counts = {int(g): int(n) for g, n in zip(*np.unique(groups, return_counts=True))}
    results: dict = {name: {} for name in models}
    for split in spec.test_splits + ("val",):
        data = open_split(prepared, split, spec.views, "eval", config.workers)
        for name, model in models.items():
            predictions = predict(model, data, config.eval_batch_size, device, f"{name} on {split}")
            results[name][split] = group_metrics(data.labels, data.groups, predictions, group_names, train_counts)
    if spec.metrics == "background_challenge":
        for name in models:
            results[name]["background_challenge"] = background_challenge_metrics(
                {split.removeprefix("test_"): results[name][split]["accuracy"] for split in spec.test_splits})
    write_json(args.metrics, results)

    picked = pick_per_group(groups, config.examples_per_group)  # only these rows are read from the large files
    images = masking_view_images(prepared, spec.views, picked)
    saliency = full_maps_at(args.saliency, len(groups), picked)
    masked = apply_masks(images, read_masks(args.masks, len(groups), images.shape[1:3], picked))
    with atomic_directory(args.plots) as tmp_dir:
        write_group_csv(Path(tmp_dir) / "group_accuracy.csv", results)
        save_mask_grid(Path(tmp_dir) / "mask_examples.png", images, saliency, masked,
                       [group_names[int(g)] for g in groups[picked]],
                       f"{METHOD_NAMES[method]} masks ({method}) on training images (as the saliency saw them)")
    for name, splits in results.items():
        print(name + ": " + ", ".join(f"{split} {m['accuracy']:.2%} (worst group {m['worst_group_accuracy']:.2%})"
                                      for split, m in splits.items() if "worst_group_accuracy" in m))
        if "background_challenge" in splits:
            print(f"{name}: BG-gap {splits['background_challenge'].get('bg_gap', float('nan')):.2%}")


if __name__ == "__main__":
    main()
