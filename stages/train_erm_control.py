"""Stage `train_erm_control@<k>`: a second ERM model, for selective classification's two-ERM control.

The same network, recipe and params as `train_erm` (`masktune.train.network.train_erm`), with seed
`train_erm.seed + k` (k one of `selective.control_seed_offsets`, at least 1: a seed sweep over
`train_erm.seed` therefore never trains a control equal to its ERM). The `selective` stage scores the
product of the two ERM models' softmaxes exactly as MaskTune's official score multiplies ERM's and the
fine-tuned model's, so that MaskTune is compared with what any second model of the same recipe gives.
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.distributed import start_workers
from masktune.errors import run_stage
from masktune.train.network import TrainErmControlConfig, train_erm


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--offset", required=True, type=int, help="the control's seed is train_erm.seed + offset")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--best", required=True, help="checkpoint of the best validation accuracy")
    parser.add_argument("--last", required=True, help="checkpoint after the last epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    stage = f"train_erm_control@{args.offset}"
    config = load_config(TrainErmControlConfig, stage)  # seed: train_erm.seed + offset
    train_erm(config, start_workers(config), args.data, args.best, args.last, args.live, stage)


if __name__ == "__main__":
    main()
