"""Stage `robust_train@<name>`: the (groups, trainer) pair `methods.robust_train.<name>` of params.yaml.

Reads the pair's groups file (any group inference: the true groups, JTT's error set, ExMap's or
ClusterFix's clusters) and trains train_erm's network from ERM's start with the pair's trainer
(masktune/robust_train/: `upsample`, JTT's retraining; `cluster_reweight`, ClusterFix's; `groupdro`) and
its recipe (`<trainer>.*`, null values from `recipes.<dataset>.<trainer>`). Keeps the checkpoint of the
best validation score under the pair's `selection`, recording in it the pair and its group-label use
(✓ where the groups are the true ones or the selection reads them) for the report. Data-parallel where
the trainer's loss allows it (upsampling); survives preemption (masktune.train.fit's epoch journal).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.distributed import select_device, start_workers
from masktune.errors import run_stage
from masktune.robust_train import load_trainer
from masktune.robust_train.base import PairConfig, train_robust


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="a pair of methods.robust_train")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--groups", required=True, help="the pair's groups file (HDF5)")
    parser.add_argument("--out", required=True, help="checkpoint of the selected epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    parser.add_argument("--oracle", required=True, help="checkpoint of the best true worst group (the selection gap)")
    args = parser.parse_args()

    stage = f"robust_train@{args.name}"
    module = load_trainer(load_config(PairConfig, stage).trainer)
    config = load_config(module.SPEC.configs["robust_train"], stage)
    trainer = module.TRAINER
    device = start_workers(config) if trainer.data_parallel else select_device()
    train_robust(trainer, module.SPEC, config, device, args.data, args.groups, args.out, args.live, args.name,
                 args.oracle)


if __name__ == "__main__":
    main()
