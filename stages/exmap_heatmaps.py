"""Stage `exmap_heatmaps@<method>`: ExMap's heatmaps of the validation images.

The ERM model (its best validation-accuracy checkpoint, as the official scripts' best_acc_checkpoint.pt)
explains its predicted class on every validation image, in order: LRP relevance with zennit
(`exmap.heatmaps: lrp`, official) or XGradCAM (`xgradcam`); resized to `exmap.heatmap_size` (0: kept),
flattened (masktune/group_inference/exmap.py cites the official lines). Batched, on the GPU when there is one,
written batch by batch to HDF5 (`heatmaps` float32 (N, D), `predicted`).
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.data.prepared import open_prepared
from masktune.data.splits import open_split
from masktune.distributed import start_workers
from masktune.errors import run_stage
from masktune.group_inference.exmap import write_heatmaps
from masktune.models.checkpoint import load_checkpoint


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the ExMap entry of methods.exmap: exmap")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--model", required=True, help="the best ERM checkpoint")
    parser.add_argument("--out", required=True, help="HDF5 file of the validation heatmaps")
    args = parser.parse_args()

    config = load_stage_config(f"exmap_heatmaps@{args.name}")
    device = start_workers(config)
    prepared, spec = open_prepared(args.data)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    model, _ = load_checkpoint(args.model, device)
    write_heatmaps(model, val, args.out, heatmaps=config.heatmaps, gamma=config.gamma, size=config.heatmap_size,
                   batch_size=config.batch_size, device=device,
                   attrs={"method": args.name, "dataset": prepared.dataset, "heatmaps": config.heatmaps,
                          "gamma": config.gamma, "heatmap_size": config.heatmap_size})
    print(f"ExMap: {config.heatmaps} heatmaps of {len(val):,} validation images -> {args.out}")


if __name__ == "__main__":
    main()
