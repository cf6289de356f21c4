"""Stage `clusterfix_features@<name>`: the features ClusterFix clusters, for every split.

L2-normalised penultimate features of a frozen network (masktune/group_inference/clusterfix.py
`feature_network`): the ERM model's own (`clusterfix.backbone: erm`, the MNIST-family recipes), the
self-supervised one of clusterfix_ssl (`ssl`), or torchvision's ImageNet ResNet-18 (`resnet18`: Waterbirds
as the official code, CelebA and IN-9L here) or ResNet-50, each split through its evaluation view, in
order. One HDF5 array per split (N, D).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.data.prepared import open_prepared
from masktune.data.splits import open_split
from masktune.distributed import is_main_process, start_workers
from masktune.errors import run_stage
from masktune.group_inference.clusterfix_features import ClusterFixFeaturesConfig, feature_network, split_features
from masktune.io.hdf5 import write_arrays


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the ClusterFix entry of methods.clusterfix: clusterfix")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--model", required=True, help="the ERM checkpoint (the backbone when clusterfix.backbone: erm)")
    parser.add_argument("--ssl", required=True, help="clusterfix_ssl's checkpoint (the backbone when clusterfix.backbone: ssl)")
    parser.add_argument("--out", required=True, help="HDF5 file: one (N, D) feature array per split")
    args = parser.parse_args()

    config = load_config(ClusterFixFeaturesConfig, f"clusterfix_features@{args.name}")
    device = start_workers(config)
    prepared, spec = open_prepared(args.data)
    network = feature_network(config.backbone, {"erm": args.model, "ssl": args.ssl}, config.weights_path,
                              prepared.num_classes, device)
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
