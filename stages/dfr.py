"""Stage `dfr@<method>`: DFR, the last layer of the best ERM model retrained on the validation set,
group-balanced (masktune/methods/dfr.py cites the official lines), with the method's groups: the class
labels (`dfr_classes`, no group labels) or the true validation groups (`dfr_groups`, the supervised
reference of ExMap's comparison). The model is the ERM network with the averaged logistic regression
as its classifier, a checkpoint `evaluate` reads; the summary holds the C chosen and the group sizes.
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.distributed import select_device
from masktune.errors import run_stage
from masktune.io.files import write_json
from masktune.methods import get_method
from masktune.methods.dfr import retrain_last_layers


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="a DFR entry of the registry: dfr_classes, dfr_groups")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--model", required=True, help="the best ERM checkpoint")
    parser.add_argument("--models", required=True, help="folder the checkpoint goes to (<method>.pt)")
    parser.add_argument("--metrics", required=True, help="JSON: C chosen, group sizes")
    args = parser.parse_args()

    method = get_method(args.method)
    config = load_stage_config(f"dfr@{method.name}")
    prepared, spec = open_prepared(args.data)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    report = retrain_last_layers(method, val, args.model, args.models, config, select_device(), prepared.num_classes)
    write_json(args.metrics, report)


if __name__ == "__main__":
    main()
