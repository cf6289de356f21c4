"""Stage `exmap_extend@<name>`: ExMap's pseudo-groups as two groups files, G-ExMap's and L-ExMap's, on the
validation images (as `exmap_groups` clustered them) and on the training images, which ExMap's paper
leaves out (its DFR retrains on validation only): each training image's heatmap, computed as the
validation heatmaps were and streamed, takes the majority pseudo-group of its nearest validation heatmaps
of its class (masktune/group_inference/exmap.py `extend_to_train`), so that trainers that train on the
training set (GroupDRO, upsampling) can use ExMap's groups. Writes each groups file and its diagnostic
against the true groups (never used).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.data.prepared import open_prepared
from masktune.data.splits import open_split
from masktune.distributed import is_main_process, start_workers
from masktune.errors import run_stage
from masktune.eval.clusters import write_groups_with_report
from masktune.group_inference.exmap import SCOPES, NeighbourVote, exmap_groups, read_heatmaps
from masktune.group_inference.exmap_heatmaps import ExMapHeatmapsConfig, extend_to_train
from masktune.io.hdf5 import read_arrays, read_attrs
from masktune.models.checkpoint import load_checkpoint


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the ExMap entry of methods.exmap: exmap")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--model", required=True, help="the best ERM checkpoint (the heatmaps' model)")
    parser.add_argument("--heatmaps", required=True, help="the validation heatmaps of exmap_heatmaps (HDF5)")
    parser.add_argument("--pseudo-groups", required=True, help="the validation pseudo-groups of exmap_groups (HDF5)")
    parser.add_argument("--out", required=True, help="folder of the groups files <name>_global.h5, <name>_local.h5")
    parser.add_argument("--metrics", required=True, help="folder of their diagnostics <name>_<scope>.json")
    args = parser.parse_args()

    config = load_config(ExMapHeatmapsConfig, f"exmap_extend@{args.name}")
    device = start_workers(config)
    prepared, info = open_prepared(args.data)
    labels = {split: prepared.vectors(split, "labels")[0] for split in ("train", "val")}
    heatmaps = read_heatmaps(args.heatmaps, len(labels["val"]), config.heatmap_size)
    val_ids = read_arrays(args.pseudo_groups, {scope: (len(labels["val"]),) for scope in SCOPES})
    model, _ = load_checkpoint(args.model, device)
    train = open_split(prepared, "train", info.views, "eval", config.workers)
    train_ids = extend_to_train(model, train, NeighbourVote(heatmaps, labels["val"], val_ids), config, device)
    if not is_main_process():
        return
    how = str(read_attrs(args.pseudo_groups).get("clustering", ""))
    for name, groups in exmap_groups(train_ids, val_ids, labels, prepared.class_names, args.name,
                                     f"{config.heatmaps} heatmaps, {how}").items():
        write_groups_with_report(groups, f"{args.out}/{name}.h5", f"{args.metrics}/{name}.json", prepared)


if __name__ == "__main__":
    main()
