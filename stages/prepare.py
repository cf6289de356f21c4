"""Stage `prepare`: build the dataset named by the `dataset` param and write all its splits.

Biased MNIST and C-MNIST are built from MNIST as pixel arrays; Waterbirds, CelebA and IN-9L are read
from their folders (or downloaded, see params.yaml) and copied, each image's file bytes as they are,
into the same HDF5 file (masktune/data/prepared.py says why); a folder of the user's own images
(`folder`) either way, by its `transforms` (masktune/datasets/folder.py).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from masktune.data.prepared import write_prepared
from masktune.datasets import get_dataset, load_prepare_config
from masktune.errors import run_stage


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="HDF5 file to write (one group per split)")
    args = parser.parse_args()

    config = load_prepare_config()
    spec = get_dataset(config.dataset)
    attrs = spec.file_attributes(config)
    splits = spec.prepare(config)
    write_prepared(args.out, splits, attrs)
    group_names = {int(g): name for g, name in json.loads(attrs["group_names"]).items()}
    for split, samples in splits.items():
        counts = {group_names[g]: int(n) for g, n in zip(*np.unique(samples.groups, return_counts=True))}
        print(f"{split}: {len(samples)} images, groups {counts}")


if __name__ == "__main__":
    main()
