"""Stage `last_layer@<name>`: the (groups, trainer) pair `methods.last_layer.<name>` of params.yaml, DFR
(masktune/last_layer/dfr.py cites the official lines): the last layer of the best ERM model retrained on
the validation set, balanced over the pair's groups, its C chosen by the pair's `selection` (by default
the worst of its own groups, ExMap's rule). With the classes
(`dfr_classes`, ✗), the true groups (`dfr_groups`, ✓: the supervised reference of ExMap's comparison),
ExMap's pseudo-groups (G-ExMap, L-ExMap) or any other groups file. The model is the ERM network with
the averaged logistic regression as its classifier, a checkpoint `evaluate` reads; the summary holds
the C chosen and the group sizes. Beside it, for the report only, the model whose C the true groups'
worst group would pick (the selection gap, docs/methods.md).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.data.prepared import open_prepared
from masktune.data.splits import open_split
from masktune.distributed import select_device
from masktune.errors import run_stage
from masktune.groups import read_groups
from masktune.io.files import write_json
from masktune.last_layer import LastLayerPairConfig, load_trainer


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="a pair of methods.last_layer")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--model", required=True, help="the best ERM checkpoint")
    parser.add_argument("--groups", required=True, help="the pair's groups file (HDF5)")
    parser.add_argument("--out", required=True, help="the retrained checkpoint")
    parser.add_argument("--metrics", required=True, help="JSON: C chosen, group sizes")
    parser.add_argument("--oracle", required=True, help="the model of the C the true worst group picks (the gap)")
    args = parser.parse_args()

    stage = f"last_layer@{args.name}"
    trainer = load_trainer(load_config(LastLayerPairConfig, stage).trainer)
    config = load_config(trainer.SPEC.configs["last_layer"], stage)
    prepared, info = open_prepared(args.data)
    groups = read_groups(args.groups, {split: prepared.length(split) for split in ("train", "val")})
    val = open_split(prepared, "val", info.views, "eval", config.workers)
    report = trainer.train_pair(args.name, args.model, val, groups, config, select_device(), args.out, args.oracle)
    write_json(args.metrics, report)
    print(f"{args.name} (DFR on {groups.inference}, C by {config.selection}, group labels {report['group_labels']}): "
          f"C {report['c']} (the true worst group's: {report['oracle_c']}), {report['groups']} groups of sizes "
          f"{report['group_sizes']}")


if __name__ == "__main__":
    main()
