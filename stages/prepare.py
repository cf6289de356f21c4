"""Stage `prepare`: build the dataset named by the `dataset` param and write all its splits.

Biased MNIST is built from MNIST as pixel arrays; Waterbirds, CelebA and IN-9L are read from their
folders (or downloaded, see params.yaml) and copied, each image's file bytes as they are, into the
same HDF5 file (masktune/image_store.py).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from masktune.datasets import DATASETS
from masktune.errors import run_stage
from masktune.params import load_stage_params
from masktune.storage import write_splits


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="HDF5 file to write (one group per split)")
    args = parser.parse_args()

    params = load_stage_params("prepare")
    name = params.choice("dataset", list(DATASETS))
    spec = DATASETS[name]
    group_names = spec.group_names(params)
    splits = spec.prepare(params)
    attrs = {"dataset": name, "num_classes": spec.num_classes, "group_names": json.dumps(group_names)}
    if spec.image_folder:
        from masktune.image_store import write_image_splits

        write_image_splits(args.out, splits, attrs)
    else:
        write_splits(args.out, splits, attrs)
    for split, samples in splits.items():
        counts = {group_names[g]: int(n) for g, n in zip(*np.unique(samples.groups, return_counts=True))}
        print(f"{split}: {len(samples)} images, groups {counts}")


if __name__ == "__main__":
    main()
