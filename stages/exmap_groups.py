"""Stage `exmap_groups@<method>`: ExMap's pseudo-groups of the validation images.

The heatmaps, each divided by its max |value|, clustered per class (L-ExMap) and all together
(G-ExMap): spectral clustering with the eigengap choice of k (`exmap.clusters: auto`) or a fixed k,
or UMAP 2-D + k-means (`exmap.clustering: umap_kmeans`, the official CelebA setting). Writes the
pseudo-group ids (HDF5: `global`, `local` per validation row), a diagnostic of how they match the true
groups (never used for selection), and ExMap's figure: a 2-D UMAP of the heatmaps coloured by true
group and by each pseudo-grouping.
"""
from __future__ import annotations

import argparse

import numpy as np

from masktune.config.params import load_config
from masktune.data.prepared import PreparedFile
from masktune.errors import UserError, run_stage
from masktune.eval.clusters import purity
from masktune.eval.figures import save_embedding_figure
from masktune.group_inference.clustering import umap_2d
from masktune.group_inference.exmap import ExMapGroupsConfig, normalise, pseudo_groups, read_heatmaps
from masktune.io.files import write_json
from masktune.io.hdf5 import read_attrs, write_arrays


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the ExMap entry of methods.exmap: exmap")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--heatmaps", required=True, help="the validation heatmaps (HDF5)")
    parser.add_argument("--out", required=True, help="HDF5 file: pseudo-group ids per validation row")
    parser.add_argument("--metrics", required=True, help="JSON: k chosen, pseudo-group purity")
    parser.add_argument("--figure", required=True, help="PNG: 2-D embedding of the heatmaps")
    args = parser.parse_args()

    config = load_config(ExMapGroupsConfig, f"exmap_groups@{args.name}")
    prepared = PreparedFile(args.data)
    labels, true_groups = prepared.vectors("val", "labels", "groups")
    heatmaps = read_heatmaps(args.heatmaps, len(labels), config.heatmap_size)
    k = None if config.clusters == "auto" else config.clusters
    if k is None and config.clustering != "spectral":
        raise UserError("params.yaml: exmap.clusters must be a number with exmap.clustering: umap_kmeans "
                        "(auto is spectral clustering's eigengap rule)")
    print(f"ExMap: clustering {len(labels):,} heatmaps ({config.clustering}, k {config.clusters})")
    groups, chosen = pseudo_groups(heatmaps, labels, method=config.clustering, k=k, seed=config.seed)
    write_arrays(args.out, groups, {"method": args.name, "clustering": config.clustering,
                                    "clusters": str(config.clusters)})

    names = prepared.group_names
    report = {"heatmaps": str(read_attrs(args.heatmaps).get("method", "")), "clustering": config.clustering,
              "clusters_chosen": chosen,
              **{scope: purity(ids, true_groups, names) for scope, ids in groups.items()}}
    write_json(args.metrics, report)
    for scope in groups:
        print(f"{scope}: {report[scope]['pseudo_groups']} pseudo-groups, purity {report[scope]['purity']:.2%}, "
              f"ARI {report[scope]['adjusted_rand_index']:.3f}; true groups found: "
              + ", ".join(f"{g} {share:.0%}" for g, share in report[scope]["true_group_found"].items()))

    xy = umap_2d(normalise(heatmaps), config.seed, exact_neighbours=True)
    save_embedding_figure(args.figure, xy, {
        "true groups (not used)": (true_groups, names),
        **{f"{scope} pseudo-groups": (ids, {int(g): f"{g}: class {labels[ids == g][0]}" for g in np.unique(ids)})
           for scope, ids in groups.items()}},
        f"ExMap: 2-D UMAP of the {report['heatmaps']} heatmaps of {prepared.dataset}'s validation set")


if __name__ == "__main__":
    main()
