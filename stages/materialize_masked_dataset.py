"""Stage `materialize_masked_dataset`: the training set with its masks applied.

`mask.method: xgradcam` is MaskTune (pixels above mean + threshold_std * std of the positive
saliency are zeroed); `mask.method: random` is the paper's RandMask baseline (one Cutout square per
image). Also writes how much of each group was masked, to compare the two.
"""
from __future__ import annotations

import argparse

import numpy as np

from masktune.datasets import get_dataset
from masktune.errors import UserError, run_stage
from masktune.masking import apply_masks, cutout_masks, saliency_masks
from masktune.params import load_stage_params
from masktune.storage import read_arrays, read_attrs, read_split, write_json, write_splits


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5); its train split is masked")
    parser.add_argument("--saliency", required=True, help="saliency maps of the train split (HDF5)")
    parser.add_argument("--out", required=True, help="HDF5 file with the masked train split")
    parser.add_argument("--metrics", required=True, help="JSON: fraction of pixels masked per group")
    args = parser.parse_args()

    params = load_stage_params("materialize_masked_dataset")
    method = params.choice("mask.method", ["xgradcam", "random"])
    n_std = params.number("mask.threshold_std", 0.0)
    sides = params.int_list("mask.cutout_sides", 2, 1, 10_000)
    if sides[0] > sides[1]:
        raise UserError(f"params.yaml: mask.cutout_sides must be [min, max] with min <= max, got {sides}")
    seed = params.integer("mask.seed", 0)

    train, data_attrs = read_split(args.data, "train"), read_attrs(args.data)
    n, height, width = train.images.shape[:3]
    if method == "xgradcam":
        maps = read_arrays(args.saliency, {"saliency": (n, None, None)})["saliency"]
        masks = saliency_masks(maps, n_std)
    else:
        masks = cutout_masks(n, height, width, (sides[0], sides[1]), np.random.default_rng(seed))
    masked = apply_masks(train.images, masks)
    write_splits(args.out, {"train": train.with_images(masked)},
                 attrs={"method": method, "dataset": data_attrs["dataset"]})

    group_names = get_dataset(str(data_attrs["dataset"])).group_names
    fraction = masks.reshape(n, -1).mean(axis=1)
    report = {"masked_pixel_fraction": float(fraction.mean()),
              "unmasked_images": float((fraction == 0).mean()),
              "masked_pixel_fraction_by_group": {
                  group_names[int(g)]: float(fraction[train.groups == g].mean())
                  for g in np.unique(train.groups)}}
    write_json(args.metrics, report)
    print(f"{method}: masked {report['masked_pixel_fraction']:.2%} of the pixels of {n} images")


if __name__ == "__main__":
    main()
