"""Stage `exmap_dfr@<method>`: ExMap's last step, DFR (masktune/methods/dfr.py) with ExMap's
pseudo-groups in place of the true groups: one model per pseudo-grouping, G-ExMap (global clusters)
and L-ExMap (per-class clusters), each the ERM network with its averaged logistic regression as the
classifier. No group labels are read.
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.distributed import select_device
from masktune.errors import run_stage
from masktune.io.files import write_json
from masktune.io.hdf5 import read_arrays
from masktune.methods import get_method
from masktune.methods.dfr import retrain_last_layers


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="the ExMap entry of the registry: exmap")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--model", required=True, help="the best ERM checkpoint")
    parser.add_argument("--pseudo-groups", required=True, help="exmap_groups' pseudo-group ids (HDF5)")
    parser.add_argument("--models", required=True, help="folder the checkpoints go to (<method>_<scope>.pt)")
    parser.add_argument("--metrics", required=True, help="JSON: C chosen, pseudo-group sizes, per model")
    args = parser.parse_args()

    method = get_method(args.method)
    config = load_stage_config(f"exmap_dfr@{method.name}")
    prepared, spec = open_prepared(args.data)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    pseudo = read_arrays(args.pseudo_groups, {"global": (len(val),), "local": (len(val),)})
    report = retrain_last_layers(method, val, args.model, args.models, config, select_device(), prepared.num_classes,
                                 pseudo)
    write_json(args.metrics, report)


if __name__ == "__main__":
    main()
