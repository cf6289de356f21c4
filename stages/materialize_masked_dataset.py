"""Stage `materialize_masked_dataset@<method>`: the mask of every training image, for a masking method.

`masktune` (MaskTune): pixels above mean + threshold_std * std of the positive saliency are masked;
`randmask` (the paper's RandMask baseline): one Cutout square per image. Writes bit-packed masks at
the resolution the saliency saw (the masking view), streamed in chunks (the finetune applies them as
it reads the images; masktune/data/masks.py says why), how much of each group was masked, and a
gallery, one PNG per class: its most and least masked training images of each group, as the saliency
saw them, their saliency, masked (what the model relied on).
"""
from __future__ import annotations

import argparse

import numpy as np

from masktune.config.params import load_config
from masktune.data.masks import apply_masks, read_masks
from masktune.data.prepared import open_prepared
from masktune.data.splits import masking_view_images, masking_view_size
from masktune.errors import run_stage
from masktune.eval.figures import pick_gallery, save_mask_gallery
from masktune.io.files import atomic_directory, write_json
from masktune.masking import load_masker
from masktune.saliency.file import full_maps_at


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="a masking method of the registry: masktune, randmask")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5); its train split is masked")
    parser.add_argument("--saliency", required=True, help="saliency maps of the train split (HDF5)")
    parser.add_argument("--out", required=True, help="HDF5 file: packed masks of the train split")
    parser.add_argument("--metrics", required=True, help="JSON: fraction of pixels masked per group")
    parser.add_argument("--gallery", required=True,
                        help="folder: one PNG per class, its most and least masked images, saliency and masks")
    args = parser.parse_args()

    masker = load_masker(args.method)
    config = load_config(masker.SPEC.configs["materialize_masked_dataset"], f"materialize_masked_dataset@{args.method}")
    prepared, spec = open_prepared(args.data)
    labels, groups = prepared.vectors("train", "labels", "groups")
    rows, size = len(groups), masking_view_size(prepared, spec.views)  # the images the saliency saw
    attrs = {"method": args.method, "dataset": prepared.dataset, "title": masker.SPEC.title}
    fraction = masker.write_masks(config, args.saliency, args.out, rows, size, attrs)

    names = prepared.group_names
    report = {"masked_pixel_fraction": float(fraction.mean()),
              "unmasked_images": float((fraction == 0).mean()),
              "masked_pixel_fraction_by_group": {
                  names[int(g)]: float(fraction[groups == g].mean()) for g in np.unique(groups)}}
    write_json(args.metrics, report)

    gallery = pick_gallery(labels, groups, fraction, config.examples_per_group)
    picked = np.unique(np.concatenate(list(gallery.values())))  # only these rows are read from the large files
    images = masking_view_images(prepared, spec.views, picked)
    masked = apply_masks(images, read_masks(args.out, rows, images.shape[1:3], picked))
    maps = full_maps_at(args.saliency, rows, picked)
    captions = {int(r): f"{names[int(groups[r])]}, {fraction[r]:.1%} masked" for r in picked}
    with atomic_directory(args.gallery) as folder:
        save_mask_gallery(folder, gallery, prepared.class_names, picked, images, maps, masked, captions,
                          f"{masker.SPEC.title}: most and least masked training images (as the saliency saw them)")
    print(f"{args.method}: masked {report['masked_pixel_fraction']:.2%} of the pixels of {rows:,} images")


if __name__ == "__main__":
    main()
