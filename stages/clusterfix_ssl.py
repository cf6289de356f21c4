"""Stage `clusterfix_ssl@<name>`: the self-supervised backbone ClusterFix clusters with `clusterfix.backbone: ssl`.

train_erm's network from its start, trained on the training images without labels by
`clusterfix.ssl_objective` (simclr | denoising; masktune/group_inference/ssl.py cites both papers), the
last epoch kept. With any other backbone it trains nothing and writes constant files, so that its params
rerun nothing after it. One process; survives preemption (masktune.train.fit's epoch journal).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.distributed import select_device
from masktune.errors import run_stage
from masktune.group_inference.ssl import ClusterFixSSLConfig, train_ssl, write_unused
from masktune.seeding import resolve_seed


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the ClusterFix entry of methods.clusterfix: clusterfix")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--out", required=True, help="checkpoint of the trained backbone")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    config = load_config(ClusterFixSSLConfig, f"clusterfix_ssl@{args.name}")
    if config.backbone != "ssl":
        write_unused(args.out, args.live)
        print(f"{args.name}.backbone is {config.backbone}: no self-supervised backbone to train")
        return
    seed = resolve_seed(config.seed, f"{args.name}.seed")
    train_ssl(config, select_device(), args.data, args.out, args.live, f"clusterfix_ssl@{args.name}", seed)


if __name__ == "__main__":
    main()
