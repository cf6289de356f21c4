"""Stage `clusterfix_clusters@<name>`: ClusterFix's pseudo-labels, as a groups file.

Per class, spherical (cosine) k-means of the training features into `clusterfix.clusters_per_class`
clusters, seeded; validation and test images go to the nearest training centroid of their class
(masktune/group_inference/clusterfix.py `pseudo_labels`). Writes the groups file (train and val: cluster
j of class c is group c * k + j) and its diagnostic against the true groups (label x spurious attribute),
with the test split's: reported only, never used.
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.data.prepared import open_prepared
from masktune.errors import run_stage
from masktune.eval.clusters import purity, write_groups_with_report
from masktune.group_inference.clusterfix import ClusterFixClustersConfig, clusterfix_groups, pseudo_labels
from masktune.io.hdf5 import read_arrays, read_attrs
from masktune.seeding import resolve_seed


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the ClusterFix entry of methods.clusterfix: clusterfix")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--features", required=True, help="the features of clusterfix_features (HDF5)")
    parser.add_argument("--out", required=True, help="the groups file (HDF5)")
    parser.add_argument("--metrics", required=True, help="JSON: the clusters against the true groups")
    args = parser.parse_args()

    config = load_config(ClusterFixClustersConfig, f"clusterfix_clusters@{args.name}")
    seed = resolve_seed(config.seed, "clusterfix.seed")
    prepared, info = open_prepared(args.data)
    splits = ("train", "val", *info.test_splits)
    labels, groups = {}, {}
    for split in splits:
        labels[split], groups[split] = prepared.vectors(split, "labels", "groups")
    features = read_arrays(args.features, {split: (len(labels[split]), None) for split in splits})
    k = config.clusters_per_class
    print(f"ClusterFix: {k} clusters per class of {len(labels['train']):,} training features (spherical k-means)")
    pseudo = pseudo_labels(features, labels, k, prepared.num_classes, seed)
    backbone = str(read_attrs(args.features).get("backbone", ""))
    extra = {"backbone": backbone, "clusters_per_class": k, "seed": seed,
             **{split: purity(pseudo.ids[split], groups[split], prepared.group_names) for split in info.test_splits}}
    write_groups_with_report(clusterfix_groups(pseudo, labels, prepared.class_names, f"{backbone} features, k {k}"),
                             args.out, args.metrics, prepared, extra)


if __name__ == "__main__":
    main()
