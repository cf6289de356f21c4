"""Stage `clusterfix_features@<method>`: the features ClusterFix clusters, for every split.

L2-normalised penultimate features of a frozen network (masktune/methods/clusterfix.py
`feature_network`): the ERM model's own (`clusterfix.backbone: erm`, the MNIST-family recipes) or
torchvision's ImageNet ResNet-18 (`resnet18`: Waterbirds as the official code, CelebA and IN-9L
here), each split through its evaluation view, in order. One HDF5 array per split (N, D).
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.distributed import is_main_process, start_workers
from masktune.errors import run_stage
from masktune.io.hdf5 import write_arrays
from masktune.methods import get_method
from masktune.methods.clusterfix import feature_network, split_features


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="the ClusterFix entry of the registry: clusterfix")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--model", required=True, help="the ERM checkpoint (the backbone when clusterfix.backbone: erm)")
    parser.add_argument("--out", required=True, help="HDF5 file: one (N, D) feature array per split")
    args = parser.parse_args()

    method = get_method(args.method)
    config = load_stage_config(f"clusterfix_features@{method.name}")
    device = start_workers(config)
    prepared, spec = open_prepared(args.data)
    network = feature_network(config.backbone, args.model, config.weights_path, prepared.num_classes, device)
    features = {}
    for split in ("train", "val", *spec.test_splits):
        data = open_split(prepared, split, spec.views, "eval", config.workers)
        features[split] = split_features(network, data, config.eval_batch_size, device, f"features of {split}")
    if not is_main_process():
        return
    write_arrays(args.out, features, {"backbone": config.backbone})
    print(f"ClusterFix: {features['train'].shape[1]}-d {config.backbone} features of "
          + ", ".join(f"{split} ({len(x):,})" for split, x in features.items()))


if __name__ == "__main__":
    main()
