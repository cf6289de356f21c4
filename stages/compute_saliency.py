"""Stage `compute_saliency`: XGradCAM of the best ERM model for every training image.

Target: the model's predicted class; target layer: the model's `grad_cam_target_layer()` (SmallCNN:
the last ReLU of the backbone, the official `get_grad_cam_target_layer`). Written to HDF5 with the
predicted class of each image.
"""
from __future__ import annotations

import argparse

from masktune.errors import run_stage
from masktune.params import load_stage_params
from masktune.saliency import compute_saliency
from masktune.storage import read_split, write_arrays
from masktune.training import load_checkpoint, select_device


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5); its train split is used")
    parser.add_argument("--model", required=True, help="checkpoint to explain (the best ERM model)")
    parser.add_argument("--out", required=True, help="HDF5 file: saliency (N, H, W), predicted (N,)")
    args = parser.parse_args()

    params = load_stage_params("compute_saliency")
    batch_size = params.integer("saliency.batch_size", 1)
    device = select_device()
    train = read_split(args.data, "train")
    model, state = load_checkpoint(args.model, device)
    maps, predicted = compute_saliency(model, train, batch_size, device)
    write_arrays(args.out, {"saliency": maps, "predicted": predicted},
                 attrs={"method": "xgradcam", "checkpoint_epoch": int(state["epoch"])})
    print(f"saliency of {len(maps)} images; the model predicts the true class for "
          f"{(predicted == train.labels).mean():.2%} of them")


if __name__ == "__main__":
    main()
