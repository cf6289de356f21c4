"""Stage `train_erm_control@<seed>`: a second ERM model, for selective classification's two-ERM control.

The same network, recipe and params as `train_erm` (`masktune.train.erm.train_erm`), another seed (one
of `selective.control_seeds`): the `selective` stage scores the product of the two ERM models' softmaxes
exactly as MaskTune's official score multiplies ERM's and the fine-tuned model's, so that MaskTune is
compared with what any second model of the same recipe would give.
"""
from __future__ import annotations

import argparse
import dataclasses

from masktune.config.stages import load_stage_config
from masktune.distributed import start_workers
from masktune.errors import UserError, run_stage
from masktune.train.erm import train_erm


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", required=True, type=int, help="the control model's seed")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--best", required=True, help="checkpoint of the best validation accuracy")
    parser.add_argument("--last", required=True, help="checkpoint after the last epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    stage = f"train_erm_control@{args.seed}"
    config = load_stage_config(stage)
    if args.seed == config.seed:
        raise UserError(f"params.yaml: selective.control_seeds lists {args.seed}, train_erm.seed itself; the "
                        f"control needs a second ERM model of another seed")
    config = dataclasses.replace(config, seed=args.seed)
    train_erm(config, start_workers(config), args.data, args.best, args.last, args.live, stage)


if __name__ == "__main__":
    main()
