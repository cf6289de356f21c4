"""Stage `compute_saliency`: the saliency of the best ERM model for every training image: XGradCAM, the
official (`saliency.method: xgradcam`), or ExMap's LRP (`lrp`).

Target: the model's predicted class; target layer: the model's `grad_cam_target_layer()` (SmallCNN:
the last ReLU of the backbone, the official `get_grad_cam_target_layer`), on the dataset's masking
view of each image. Streams the images in batches and writes the feature-map-resolution maps and
predictions to HDF5 (masktune/saliency/file.py says why). An interrupted run resumes from its journal
(`<out>.partial/`) when rerun with the same inputs; the output appears only once complete. Runs as
torchrun workers when `distributed` asks, each on a range of the rows (masktune.saliency.compute).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.data.prepared import open_prepared
from masktune.distributed import start_workers
from masktune.errors import run_stage
from masktune.models.checkpoint import load_checkpoint
from masktune.saliency.compute import SaliencyConfig, training_saliency


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5); its train split is used")
    parser.add_argument("--model", required=True, help="checkpoint to explain (the best ERM model)")
    parser.add_argument("--out", required=True, help="HDF5 file: maps (N, ...), predicted (N,)")
    args = parser.parse_args()

    config = load_config(SaliencyConfig, "compute_saliency")
    device = start_workers(config)
    prepared, spec = open_prepared(args.data)
    model, _ = load_checkpoint(args.model, device)
    predicted = training_saliency(model, args.model, prepared, spec.views, args.out, config, device)
    if predicted is None:  # a worker other than rank 0: rank 0 wrote the file
        return
    (labels,) = prepared.vectors("train", "labels")
    print(f"saliency ({config.method}) of {len(predicted):,} images ({config.precision}, {device.type}); the model "
          f"predicts the true class for {(predicted == labels).mean():.2%} of them")


if __name__ == "__main__":
    main()
