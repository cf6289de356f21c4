"""Stage `clusterfix_clusters@<method>`: ClusterFix's pseudo-labels.

Per class, spherical (cosine) k-means of the training features into `clusterfix.clusters_per_class`
clusters, seeded; validation and test images go to the nearest training centroid of their class
(masktune/methods/clusterfix.py `pseudo_labels`). Writes the cluster id of every row of every split
(HDF5, class c's clusters numbered c*k .. c*k + k - 1) and a diagnostic of how the clusters match
the true groups (label x spurious attribute): uses the true groups, reported only, never used.
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.datasets import open_prepared
from masktune.errors import run_stage
from masktune.io.files import write_json
from masktune.io.hdf5 import read_arrays, read_attrs, write_arrays
from masktune.methods import get_method
from masktune.methods.clusterfix import pseudo_labels, resolve_seed
from masktune.methods.exmap import purity


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="the ClusterFix entry of the registry: clusterfix")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--features", required=True, help="the features of clusterfix_features (HDF5)")
    parser.add_argument("--out", required=True, help="HDF5 file: cluster id per row, one array per split")
    parser.add_argument("--metrics", required=True, help="JSON: purity of the clusters against the true groups")
    args = parser.parse_args()

    method = get_method(args.method)
    config = load_stage_config(f"clusterfix_clusters@{method.name}")
    seed = resolve_seed(config.seed)
    prepared, spec = open_prepared(args.data)
    splits = ("train", "val", *spec.test_splits)
    labels, groups = {}, {}
    for split in splits:
        labels[split], groups[split] = prepared.vectors(split, "labels", "groups")
    features = read_arrays(args.features, {split: (len(labels[split]), None) for split in splits})
    k = config.clusters_per_class
    print(f"ClusterFix: {k} clusters per class of {len(labels['train']):,} training features (spherical k-means)")
    pseudo = pseudo_labels(features, labels, k, prepared.num_classes, seed)
    write_arrays(args.out, pseudo.ids, {"clusters_per_class": k, "num_classes": prepared.num_classes, "seed": seed})

    names = prepared.group_names
    report = {"backbone": str(read_attrs(args.features).get("backbone", "")), "clusters_per_class": k, "seed": seed}
    for split in splits:
        report[split] = purity(pseudo.ids[split], groups[split], names)
    write_json(args.metrics, report)
    for split in splits:
        print(f"{split}: purity {report[split]['purity']:.2%}, ARI {report[split]['adjusted_rand_index']:.3f}; "
              "true groups found: " + ", ".join(f"{g} {share:.0%}"
                                                for g, share in report[split]["true_group_found"].items()))


if __name__ == "__main__":
    main()
