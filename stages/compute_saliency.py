"""Stage `compute_saliency`: XGradCAM of the best ERM model for every training image.

Target: the model's predicted class; target layer: the model's `grad_cam_target_layer()` (SmallCNN:
the last ReLU of the backbone, the official `get_grad_cam_target_layer`). Streams the images in
batches and writes the feature-map-resolution maps and predictions to HDF5 (masktune/saliency_store.py
says why). An interrupted run resumes from its journal (`<out>.partial/`) when rerun with the same
inputs; the output appears only once complete.
"""
from __future__ import annotations

import argparse

from masktune.errors import run_stage
from masktune.params import load_stage_params
from masktune.saliency import PRECISIONS
from masktune.saliency_store import SaliencySettings, compute_saliency_file
from masktune.streaming import read_vectors
from masktune.training import load_checkpoint, select_device


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5); its train split is used")
    parser.add_argument("--model", required=True, help="checkpoint to explain (the best ERM model)")
    parser.add_argument("--out", required=True, help="HDF5 file: cams (N, h, w), predicted (N,)")
    args = parser.parse_args()

    params = load_stage_params("compute_saliency")
    settings = SaliencySettings(
        batch_size=params.integer(params.recipe_key("saliency.batch_size", "saliency_batch_size"), 1),
        precision=params.choice("saliency.precision", list(PRECISIONS)),
        channels_last=params.boolean("saliency.channels_last"),
        fold_batchnorm=params.boolean("saliency.fold_batchnorm"),
        workers=params.integer("saliency.workers", 0, 64),
        resume_every=params.integer("saliency.resume_every", 1),
    )
    device = select_device()
    model, _ = load_checkpoint(args.model, device)
    summary = compute_saliency_file(model, args.model, args.data, args.out, settings, device)
    (labels,) = read_vectors(args.data, "train", "labels")
    print(f"saliency of {summary['images']:,} images ({settings.precision}, {device.type}); the model "
          f"predicts the true class for {(summary['predicted'] == labels).mean():.2%} of them")


if __name__ == "__main__":
    main()
