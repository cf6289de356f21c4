"""Stage `materialize_masked_dataset`: the mask of every training image.

`mask.method: xgradcam` is MaskTune (pixels above mean + threshold_std * std of the positive
saliency are masked); `mask.method: random` is the paper's RandMask baseline (one Cutout square per
image). Writes bit-packed masks at the resolution the saliency saw (the masking view), streamed in
chunks (the finetune applies them as it reads the images; masktune/data/masks.py says why), and how
much of each group was masked, to compare the two methods.
"""
from __future__ import annotations

import argparse

import numpy as np

from masktune.config.stages import load_stage_config
from masktune.data.splits import masking_view_size
from masktune.datasets import open_prepared
from masktune.errors import run_stage
from masktune.io.files import write_json
from masktune.masking.compute import write_random_masks, write_saliency_masks


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5); its train split is masked")
    parser.add_argument("--saliency", required=True, help="saliency maps of the train split (HDF5)")
    parser.add_argument("--out", required=True, help="HDF5 file: packed masks of the train split")
    parser.add_argument("--metrics", required=True, help="JSON: fraction of pixels masked per group")
    args = parser.parse_args()

    config = load_stage_config("materialize_masked_dataset")
    prepared, spec = open_prepared(args.data)
    (groups,) = prepared.vectors("train", "groups")
    rows, size = len(groups), masking_view_size(prepared, spec.views)  # the images the saliency saw
    attrs = {"method": config.method, "dataset": prepared.dataset}
    if config.method == "xgradcam":
        fraction = write_saliency_masks(args.saliency, args.out, rows, size, config.threshold_std, attrs)
    else:
        fraction = write_random_masks(args.out, rows, size, config.cutout_sides, config.seed, attrs)

    names = prepared.group_names
    report = {"masked_pixel_fraction": float(fraction.mean()),
              "unmasked_images": float((fraction == 0).mean()),
              "masked_pixel_fraction_by_group": {
                  names[int(g)]: float(fraction[groups == g].mean()) for g in np.unique(groups)}}
    write_json(args.metrics, report)
    print(f"{config.method}: masked {report['masked_pixel_fraction']:.2%} of the pixels of {rows:,} images")


if __name__ == "__main__":
    main()
