"""Stage `materialize_masked_dataset`: the mask of every training image.

`mask.method: xgradcam` is MaskTune (pixels above mean + threshold_std * std of the positive
saliency are masked); `mask.method: random` is the paper's RandMask baseline (one Cutout square per
image). Writes bit-packed masks at the resolution the saliency saw (the stored images, or the
masking view of an image-folder dataset), streamed in chunks (the finetune applies them as it loads
the images; masktune/mask_store.py says why), and how much of each group was masked, to compare the
two methods.
"""
from __future__ import annotations

import argparse

import numpy as np

from masktune.errors import UserError, run_stage
from masktune.loaders import masking_view_size
from masktune.mask_store import write_random_masks, write_saliency_masks
from masktune.params import load_stage_params
from masktune.storage import read_attrs, read_group_names, write_json
from masktune.streaming import read_vectors, split_length


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5); its train split is masked")
    parser.add_argument("--saliency", required=True, help="saliency maps of the train split (HDF5)")
    parser.add_argument("--out", required=True, help="HDF5 file: packed masks of the train split")
    parser.add_argument("--metrics", required=True, help="JSON: fraction of pixels masked per group")
    args = parser.parse_args()

    params = load_stage_params("materialize_masked_dataset")
    method = params.choice("mask.method", ["xgradcam", "random"])
    n_std = params.number("mask.threshold_std", 0.0)
    sides = params.int_list("mask.cutout_sides", 2, 1, 10_000)
    if sides[0] > sides[1]:
        raise UserError(f"params.yaml: mask.cutout_sides must be [min, max] with min <= max, got {sides}")
    seed = params.integer("mask.seed", 0)

    dataset = str(read_attrs(args.data)["dataset"])
    rows = split_length(args.data, "train")
    height, width = masking_view_size(args.data)  # the images the saliency saw (masking view)
    attrs = {"method": method, "dataset": dataset}
    if method == "xgradcam":
        fraction = write_saliency_masks(args.saliency, args.out, rows, (height, width), n_std, attrs)
    else:
        fraction = write_random_masks(args.out, rows, (height, width), (sides[0], sides[1]), seed, attrs)

    group_names = read_group_names(args.data)
    (groups,) = read_vectors(args.data, "train", "groups")
    report = {"masked_pixel_fraction": float(fraction.mean()),
              "unmasked_images": float((fraction == 0).mean()),
              "masked_pixel_fraction_by_group": {
                  group_names[int(g)]: float(fraction[groups == g].mean()) for g in np.unique(groups)}}
    write_json(args.metrics, report)
    print(f"{method}: masked {report['masked_pixel_fraction']:.2%} of the pixels of {rows:,} images")


if __name__ == "__main__":
    main()
