"""Stage `train_erm`: train the model by ERM; keep the best-validation and the last checkpoint.

The official code masks with the best checkpoint and fine-tunes from the last one
(src/methods/base_method.py, `masktune()`), so both are outputs; so is, for the report only, the
checkpoint the true groups' worst group would have picked (the selection gap, docs/methods.md). Hyperparameters left null in
`train_erm` come from `recipes.<dataset>.train_erm` (the official recipe of the dataset); the
training itself, its model selection and schedules are `masktune.train.network.train_erm`.

Runs as `distributed.nproc_per_node` x `distributed.nnodes` DDP workers when asked (masktune.distributed).
Survives preemption: each finished epoch's state goes to `models/erm_best.pt.partial/`, and a rerun
with the same data and params continues after the last finished epoch (masktune.train.fit).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.distributed import start_workers
from masktune.errors import run_stage
from masktune.train.network import TrainErmConfig, train_erm


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--best", required=True, help="checkpoint of the best validation accuracy")
    parser.add_argument("--last", required=True, help="checkpoint after the last epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    parser.add_argument("--oracle", required=True, help="checkpoint of the best true worst group (the selection gap)")
    args = parser.parse_args()

    config = load_config(TrainErmConfig, "train_erm")
    train_erm(config, start_workers(config), args.data, args.best, args.last, args.live, "train_erm", args.oracle)


if __name__ == "__main__":
    main()
